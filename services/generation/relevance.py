"""Does a reply relate to what the customer asked? Embedding similarity, calibrated.

The score is the larger of the reply's cosine similarity to the customer's message and to
each knowledge entry retrieved for the turn (all-MiniLM-L6-v2, the platform's shared
embedder): a reply may answer in the knowledge base's words rather than the customer's. The
threshold (`CBD_GENERATION_RELEVANCE_THRESHOLD`) was chosen on the dev split of a labelled
set written for this (`data/relevance_pairs.jsonl`, see the datasheet) and scored once on its
test split:

    python -m services.generation.relevance            # dev: best threshold; test: scores

Knowledge entries are embedded once and kept, so a reply costs two texts (reply, message).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.generation.knowledge import KnowledgeBase
from services.generation.settings import PACKAGE_DIR
from shared.embedding import Embedder, MiniLmEmbedder

PAIRS_PATH = Path(__file__).resolve().parent / "data" / "relevance_pairs.jsonl"
CACHE_LIMIT = 4096


class RelevanceScorer:
    """Cosine similarity of a reply to the message and the retrieved knowledge."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._cache: dict[str, np.ndarray] = {}

    def _vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            if len(self._cache) + len(missing) > CACHE_LIMIT:
                self._cache.clear()
            for text, vec in zip(missing, self.embedder.embed(missing), strict=True):
                self._cache[text] = vec
        return [self._cache[t] for t in texts]

    def score(self, reply: str, message: str, knowledge: Sequence[str] = ()) -> float:
        """The best similarity of the reply to the message or any knowledge entry."""
        [reply_vec] = self.embedder.embed([reply])
        others = self._vectors([message, *knowledge])
        return float(max(float(np.dot(reply_vec, v)) for v in others))


@dataclass(frozen=True)
class Pair:
    """One labelled example: a message, its knowledge, a reply, relevant or not."""

    id: str
    split: str
    message: str
    knowledge: tuple[str, ...]
    reply: str
    relevant: bool


def load_pairs(path: Path = PAIRS_PATH) -> list[Pair]:
    """The labelled set, with each row's knowledge entry ids resolved to their text."""
    kb = {
        e.id: f"{e.title}: {e.text}"
        for e in KnowledgeBase.load(PACKAGE_DIR / "knowledge", "demo").entries
    }
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        pairs.append(
            Pair(
                id=row["id"],
                split=row["split"],
                message=row["message"],
                knowledge=tuple(kb[k] for k in row.get("knowledge", [])),
                reply=row["reply"],
                relevant=row["label"] == "relevant",
            )
        )
    return pairs


def scores(scorer: RelevanceScorer, pairs: Sequence[Pair]) -> list[float]:
    """The score of each pair's reply."""
    return [scorer.score(p.reply, p.message, p.knowledge) for p in pairs]


def confusion(
    values: Sequence[float], labels: Sequence[bool], threshold: float
) -> dict[str, float]:
    """Accuracy, and how well off-topic replies are caught, at a threshold."""
    tp = sum(1 for v, rel in zip(values, labels, strict=True) if v < threshold and not rel)
    fp = sum(1 for v, rel in zip(values, labels, strict=True) if v < threshold and rel)
    fn = sum(1 for v, rel in zip(values, labels, strict=True) if v >= threshold and not rel)
    tn = len(values) - tp - fp - fn
    off = tp + fn
    on = fp + tn
    return {
        "threshold": threshold,
        "accuracy": (tp + tn) / len(values) if values else 0.0,
        "off_topic_recall": tp / off if off else 0.0,
        "relevant_kept": tn / on if on else 0.0,
        "n": float(len(values)),
    }


def calibrate(values: Sequence[float], labels: Sequence[bool]) -> float:
    """The threshold with the best balanced accuracy on these scores; when a range of
    thresholds ties, the middle of the range (the widest margin on both sides)."""
    candidates = sorted({round(v, 3) for v in values})
    cuts = [(a + b) / 2 for a, b in itertools.pairwise(candidates)]
    best: list[float] = []
    best_score = -1.0
    for t in cuts:
        c = confusion(values, labels, t)
        balanced = (c["off_topic_recall"] + c["relevant_kept"]) / 2
        if balanced > best_score + 1e-9:
            best, best_score = [t], balanced
        elif abs(balanced - best_score) <= 1e-9:
            best.append(t)
    if not best:
        return 0.0
    return round((best[0] + best[-1]) / 2, 3)


def main(argv: list[str] | None = None) -> None:
    """Calibrate on dev, report on test."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=Path, default=PAIRS_PATH)
    args = parser.parse_args(argv)
    pairs = load_pairs(args.pairs)
    scorer = RelevanceScorer(MiniLmEmbedder())
    dev = [p for p in pairs if p.split == "dev"]
    test = [p for p in pairs if p.split == "test"]
    dev_scores = scores(scorer, dev)
    threshold = calibrate(dev_scores, [p.relevant for p in dev])
    on = sorted(v for v, p in zip(dev_scores, dev, strict=True) if p.relevant)
    off = sorted(v for v, p in zip(dev_scores, dev, strict=True) if not p.relevant)
    report = {
        "dev_relevant_range": [on[0], on[-1]] if on else None,
        "dev_off_topic_range": [off[0], off[-1]] if off else None,
        "dev": confusion(dev_scores, [p.relevant for p in dev], threshold),
        "test": confusion(scores(scorer, test), [p.relevant for p in test], threshold),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
