"""Train the routed emotion model (`make emotion-model`): our examples and GoEmotions.

    python -m services.emotion.training            # build data/model/ with the chosen settings
    python -m services.emotion.training --search   # the settings grid, scored on dev splits

The model is routed (see `model.py`): an expert fitted on the project's own `train.jsonl`, an
expert fitted on GoEmotions' train split mapped to our seven labels (`data/public/`), both
with balanced label weights over one TF-IDF + lexical feature space, and a gate, a logistic
regression telling the two kinds of text apart, whose output blends them. The gate's bias is
the one setting that trades our domain for public text; it and the public expert's
regularisation were chosen with `--search` on dev data only: GoEmotions' dev split and a
fixed fifth of `train.jsonl` (`own_dev_fold`), fitting on the rest. Test splits (GoEmotions
test, `test.jsonl`, `heldout.jsonl`) are never read here; `cbd emotion evaluate` reports them.

A single classifier on both sources, with our examples weighted 3 to 30 times GoEmotions, was
tried first and lost either our domain or the public one (see data/DATASHEET.md).

Deterministic: fixed folds, one BLAS thread, a deterministic solver, and an archive written
with fixed timestamps, so the same data and libraries give the same artefact.
"""

from __future__ import annotations

import os

# One BLAS thread: sums in a fixed order, so weights do not depend on the machine's core count.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from services.emotion import dataset  # noqa: E402
from services.emotion.corpora import load_public  # noqa: E402
from services.emotion.lexicon import LexiconAnalyzer  # noqa: E402
from services.emotion.model import (  # noqa: E402
    MODEL_DIR,
    ROUTED_MODEL_NAME,
    Gate,
    LearnedEmotionModel,
    Matrix,
)
from shared.events import EmotionAnalysis, EmotionLabel  # noqa: E402

OWN = "own"
GOEMOTIONS = "goemotions"

# Chosen by `--search` on the dev splits (see data/DATASHEET.md for the grid).
OWN_C = 16.0
"""The own expert's regularisation: the own-data model's, chosen by 5-fold cross-validation."""
PUBLIC_C = 4.0
GATE_C = 1.0
GATE_THRESHOLD = 0.8
"""The gate's probability at which the two experts weigh the same: above 0.5, so a message
must look clearly unlike our customer-service examples before the public expert leads."""
LEXICAL_WEIGHT = 0.1
MAX_WORD_FEATURES = 50_000
MAX_CHAR_FEATURES = 50_000
"""Vocabulary caps (most frequent n-grams): they keep the artefact a few MB."""

SEARCH_PUBLIC_C = (1.0, 4.0)
SEARCH_GATE_THRESHOLDS = (0.5, 0.7, 0.8, 0.9)
OWN_DEV_FLOOR = 0.01
"""A setting may lose at most this much macro-F1 on our own dev fold against the best one."""


@dataclass(frozen=True)
class Item:
    """One labelled training or dev text and where it came from."""

    text: str
    label: EmotionLabel
    source: str


def own_dev_fold(text: str) -> bool:
    """Whether an own training example is in the fixed dev fifth used for model selection."""
    return int(hashlib.sha256(f"dev:{text}".encode()).hexdigest()[:8], 16) % 5 == 0


def read_goemotions(split: str) -> list[Item]:
    """One split of the mapped GoEmotions corpus."""
    return [Item(ex.text, ex.label, GOEMOTIONS) for ex in load_public(GOEMOTIONS, split)]


def own_items(examples: Sequence[dataset.Example]) -> list[Item]:
    """Our examples as training items."""
    return [Item(ex.text, ex.label, OWN) for ex in examples]


class LexicalCache:
    """The lexicon analysis of each text, computed once for every fit of a search."""

    def __init__(self) -> None:
        self.lexicon = LexiconAnalyzer()
        self._seen: dict[str, EmotionAnalysis] = {}

    def __call__(self, texts: Sequence[str]) -> list[EmotionAnalysis]:
        """The analyses of `texts`, in order."""
        for text in texts:
            if text not in self._seen:
                self._seen[text] = self.lexicon.analyze(text)
        return [self._seen[t] for t in texts]


@dataclass
class Parts:
    """The pieces a routed model is assembled from, fitted once per search."""

    base: LearnedEmotionModel
    """The vectorizers and the own expert (no gate yet)."""
    public: dict[float, tuple[Matrix, Matrix]]
    """The public expert's coefficients and intercepts, per regularisation C."""
    gate_weights: Matrix
    gate_intercept: float


def fit_parts(
    own: Sequence[Item],
    public: Sequence[Item],
    lexical: LexicalCache,
    public_cs: Sequence[float],
) -> Parts:
    """Vectorizers on all training text, the two experts and the (unshifted) gate."""
    texts = [it.text for it in [*own, *public]]
    words, chars = LearnedEmotionModel.fit_vectorizers(texts, MAX_WORD_FEATURES, MAX_CHAR_FEATURES)
    base = LearnedEmotionModel(
        words, chars, np.zeros((0, 0)), np.zeros(0), lexical_weight=LEXICAL_WEIGHT
    )
    x = base.features(texts, lexical(texts))
    n_own = len(own)
    start = time.perf_counter()
    base.coef, base.intercept = LearnedEmotionModel.fit_classifier(
        x[:n_own], [it.label for it in own], OWN_C
    )
    log(f"own expert fitted ({time.perf_counter() - start:.0f} s)")
    experts = {}
    for c in public_cs:
        start = time.perf_counter()
        experts[c] = LearnedEmotionModel.fit_classifier(x[n_own:], [it.label for it in public], c)
        log(f"public expert C={c} fitted ({time.perf_counter() - start:.0f} s)")
    # The gate sees only the text (n-grams), not the lexical features: it tells styles apart.
    lexical_columns = x.shape[1] - len(words.vocabulary_) - len(chars.vocabulary_)
    text_only = x[:, : x.shape[1] - lexical_columns]
    gate = LogisticRegression(C=GATE_C, max_iter=3000, class_weight="balanced", random_state=0)
    gate.fit(text_only, np.r_[np.zeros(n_own), np.ones(len(public))])
    weights = np.r_[gate.coef_[0], np.zeros(lexical_columns)].astype(np.float64)
    return Parts(base, experts, weights, float(gate.intercept_[0]))


def assemble(parts: Parts, public_c: float, gate_threshold: float) -> LearnedEmotionModel:
    """The routed model: the public expert takes over where the gate passes `gate_threshold`."""
    coef, intercept = parts.public[public_c]
    shift = math.log(gate_threshold / (1.0 - gate_threshold))
    gate = Gate(coef, intercept, parts.gate_weights, parts.gate_intercept - shift)
    base = parts.base
    return LearnedEmotionModel(
        base.words,
        base.chars,
        base.coef,
        base.intercept,
        lexical_weight=base.lexical_weight,
        gate=gate,
        name=ROUTED_MODEL_NAME,
    )


def macro_f1(model: LearnedEmotionModel, items: Sequence[Item], lexical: LexicalCache) -> float:
    """Macro-F1 over the labels present in `items` (the argmax label, as the analyzer uses)."""
    texts = [it.text for it in items]
    predicted = model.predict_proba(texts, lexical(texts)).argmax(axis=1)
    labels = list(EmotionLabel)
    gold = [labels.index(it.label) for it in items]
    scores = []
    for k in sorted(set(gold)):
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g == k and p == k)
        fp = sum(1 for g, p in zip(gold, predicted, strict=True) if g != k and p == k)
        fn = sum(1 for g, p in zip(gold, predicted, strict=True) if g == k and p != k)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def search() -> list[dict[str, float]]:
    """Fit on the training folds; score every setting on GoEmotions dev and our dev fold."""
    own = dataset.load("train")
    own_fit = own_items([ex for ex in own if not own_dev_fold(ex.text)])
    own_dev = own_items([ex for ex in own if own_dev_fold(ex.text)])
    go_train, go_dev = read_goemotions("train"), read_goemotions("dev")
    lexical = LexicalCache()
    parts = fit_parts(own_fit, go_train, lexical, SEARCH_PUBLIC_C)
    alone = parts.base
    rows = [
        {
            "public_c": 0.0,
            "gate_threshold": 1.0,
            "own_dev_f1": round(macro_f1(alone, own_dev, lexical), 4),
            "goemotions_dev_f1": round(macro_f1(alone, go_dev, lexical), 4),
        }
    ]
    print(json.dumps(rows[0]), "(own expert alone)", flush=True)
    for c in SEARCH_PUBLIC_C:
        for threshold in SEARCH_GATE_THRESHOLDS:
            model = assemble(parts, c, threshold)
            row = {
                "public_c": c,
                "gate_threshold": threshold,
                "own_dev_f1": round(macro_f1(model, own_dev, lexical), 4),
                "goemotions_dev_f1": round(macro_f1(model, go_dev, lexical), 4),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def choose(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The best GoEmotions dev score among settings within `OWN_DEV_FLOOR` of the best own."""
    best_own = max(r["own_dev_f1"] for r in rows)
    allowed = [r for r in rows if r["own_dev_f1"] >= best_own - OWN_DEV_FLOOR]
    return max(allowed, key=lambda r: (r["goemotions_dev_f1"], r["own_dev_f1"]))


def build(out: Path = MODEL_DIR) -> str:
    """Fit the shipped model on every training item and write it to `out`; returns its hash."""
    own = own_items(dataset.load("train"))
    go_train, go_dev = read_goemotions("train"), read_goemotions("dev")
    lexical = LexicalCache()
    parts = fit_parts(own, go_train, lexical, [PUBLIC_C])
    model = assemble(parts, PUBLIC_C, GATE_THRESHOLD)
    about = {
        "trained_on": {"own train.jsonl": len(own), "goemotions train": len(go_train)},
        "settings": {
            "own_c": OWN_C,
            "public_c": PUBLIC_C,
            "gate_c": GATE_C,
            "gate_threshold": GATE_THRESHOLD,
            "max_word_features": MAX_WORD_FEATURES,
            "max_char_features": MAX_CHAR_FEATURES,
        },
        "goemotions_dev_macro_f1": round(macro_f1(model, go_dev, lexical), 4),
    }
    return model.save(out, about)


def log(message: str) -> None:
    """Progress on stderr: training takes minutes."""
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Build the artefact, or print the settings grid with `--search`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", action="store_true", help="score the settings grid on dev")
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="where to write the model")
    args = parser.parse_args(argv)
    if args.search:
        rows = search()
        print("chosen:", json.dumps(choose(rows)))
        return 0
    digest = build(args.out)
    log(f"wrote {args.out} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
