"""Calibrating `customer_loop.meaning_similarity`: when two messages ask the same thing.

`python -m services.escalation.loop_calibration [--mrpc PATH]` embeds the labelled pairs in
`data/loop_pairs.yaml` with the platform's MiniLM embedder, picks the threshold with the best
F1 on the train split, and prints precision and recall on the test split at that threshold
and at the policy's. With `--mrpc`, a Microsoft Research Paraphrase Corpus file
(`msr_paraphrase_test.txt`, tab-separated, not shipped here: see its licence) is scored at the
same thresholds, as a check on text nobody on this project wrote.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from services.escalation.policy import DEFAULT_POLICY_PATH, load_policy
from shared.embedding import Embedder, MiniLmEmbedder

PAIRS_PATH = Path(__file__).parent / "data" / "loop_pairs.yaml"
TEST_EVERY = 4
"""Every 4th pair (index % 4 == 3) is held out as the test split."""


@dataclass(frozen=True)
class Pair:
    """Two messages and whether the second asks the first again."""

    first: str
    second: str
    same: bool


@dataclass(frozen=True)
class Score:
    """Precision and recall of "same ask" at one threshold."""

    threshold: float
    precision: float
    recall: float
    pairs: int

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when both are 0)."""
        total = self.precision + self.recall
        return 0.0 if total == 0 else 2 * self.precision * self.recall / total


def load_pairs(path: Path = PAIRS_PATH) -> tuple[list[Pair], list[Pair]]:
    """The labelled pairs as (train, test)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    pairs = [Pair(first, second, label == "same") for label, first, second in data["pairs"]]
    train = [p for i, p in enumerate(pairs) if i % TEST_EVERY != TEST_EVERY - 1]
    test = [p for i, p in enumerate(pairs) if i % TEST_EVERY == TEST_EVERY - 1]
    return train, test


def load_mrpc(path: Path) -> list[Pair]:
    """MRPC's tab-separated file: quality (1 = paraphrase), two ids, two sentences."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [Pair(r[3], r[4], r[0] == "1") for r in rows[1:] if len(r) == 5]


def similarities(embedder: Embedder, pairs: Sequence[Pair]) -> np.ndarray:
    """Cosine similarity of each pair's embeddings."""
    firsts = embedder.embed([p.first for p in pairs])
    seconds = embedder.embed([p.second for p in pairs])
    return np.asarray((firsts * seconds).sum(axis=1), dtype=np.float64)


def score(alike: np.ndarray, pairs: Sequence[Pair], threshold: float) -> Score:
    """Precision and recall of calling a pair "same" when its similarity >= threshold."""
    truth = np.array([p.same for p in pairs])
    called = alike >= threshold
    hits = int((called & truth).sum())
    precision = hits / int(called.sum()) if called.any() else 0.0
    recall = hits / int(truth.sum()) if truth.any() else 0.0
    return Score(round(threshold, 2), precision, recall, len(pairs))


def best_threshold(alike: np.ndarray, pairs: Sequence[Pair]) -> Score:
    """The threshold (0.30-0.95, steps of 0.01) with the best F1; ties go to the higher one,
    which escalates fewer conversations."""
    grid = [round(0.30 + 0.01 * i, 2) for i in range(66)]
    return max((score(alike, pairs, t) for t in grid), key=lambda s: (s.f1, s.threshold))


def _line(name: str, result: Score) -> str:
    return (
        f"{name:<28} threshold {result.threshold:.2f}  precision {result.precision:.3f}  "
        f"recall {result.recall:.3f}  F1 {result.f1:.3f}  ({result.pairs} pairs)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Print the calibration figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mrpc", type=Path, help="an MRPC file (msr_paraphrase_test.txt)")
    args = parser.parse_args(argv)
    embedder = MiniLmEmbedder()
    rule = load_policy(DEFAULT_POLICY_PATH).rules.customer_loop
    shipped = rule.meaning_similarity if rule is not None else None
    train, test = load_pairs()
    train_alike = similarities(embedder, train)
    test_alike = similarities(embedder, test)
    chosen = best_threshold(train_alike, train)
    print(_line("ours, train (best F1)", chosen))
    print(_line("ours, test", score(test_alike, test, chosen.threshold)))
    if shipped is not None:
        print(_line("ours, test, policy's", score(test_alike, test, shipped)))
    if args.mrpc:
        mrpc = load_mrpc(args.mrpc)
        alike = similarities(embedder, mrpc)
        print(_line("MRPC, policy's threshold", score(alike, mrpc, shipped or chosen.threshold)))
        print(_line("MRPC, best F1 (reference)", best_threshold(alike, mrpc)))


if __name__ == "__main__":
    main()
