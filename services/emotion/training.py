"""Train the routed emotion model (`make emotion-model`): our examples and GoEmotions.

    python -m services.emotion.training            # build data/model/ with the chosen settings
    python -m services.emotion.training --search   # the settings grid, scored on dev splits

The model is routed (see `model.py`): an expert fitted on the project's own `train.jsonl`, an
expert fitted on GoEmotions' train split mapped to our seven labels (`data/public/`), both
with balanced label weights over one TF-IDF + lexical feature space, and a gate, a logistic
regression telling the two kinds of text apart, whose output blends them. A third, the
meaning expert (`meaning.py`: static MiniLM word-piece vectors, a logistic regression on
GoEmotions train and our examples), is blended in geometrically. The gate's bias is the one
setting that trades our domain for public text; it, the gate's regularisation and sharpness,
the public expert's regularisation and the meaning expert's weights were chosen with
`--search` on dev data only: GoEmotions' dev split and 5-fold cross-validation over
`train.jsonl` (`own_fold`), the best GoEmotions dev score among settings that cost our
examples at most `OWN_DEV_FLOOR` against the own expert alone (`choose`). Test splits (GoEmotions
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
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from services.emotion import dataset, meaning  # noqa: E402
from services.emotion.corpora import load_public  # noqa: E402
from services.emotion.lexicon import LexiconAnalyzer  # noqa: E402
from services.emotion.model import (  # noqa: E402
    MEANING_MODEL_NAME,
    MODEL_DIR,
    ROUTED_MODEL_NAME,
    Gate,
    LearnedEmotionModel,
    Matrix,
    Meaning,
    blend,
)
from shared.events import EmotionAnalysis, EmotionLabel  # noqa: E402

OWN = "own"
GOEMOTIONS = "goemotions"

# Chosen by `--search` on the dev splits (see data/DATASHEET.md for the grid).
OWN_C = 16.0
"""The own expert's regularisation: the own-data model's, chosen by 5-fold cross-validation."""
PUBLIC_C = 1.0
GATE_C = 4.0
"""The gate's regularisation: a weaker penalty than the experts' lets it learn more of the
two styles' words."""
GATE_SHARPNESS = 1.0
"""The factor on the gate's logit: above 1, a text the gate is fairly sure of goes wholly to
one expert instead of a blend. Searched (1 and 2); 2 was no better on dev."""
GATE_THRESHOLD = 0.9
"""The gate's probability at which the two experts weigh the same: above 0.5, so a message
must look clearly unlike our customer-service examples before the public expert leads."""
LEXICAL_WEIGHT = 0.1
MAX_WORD_FEATURES = 50_000
MAX_CHAR_FEATURES = 50_000
"""Vocabulary caps (most frequent n-grams): they keep the artefact a few MB."""

MEANING_C = 16.0
"""The meaning expert's regularisation (GoEmotions dev, on the vectors alone: C 4 / 16 / 64
gave 0.470 / 0.475 / 0.481, so it matters little)."""
MEANING_OWN_WEIGHT = 10.0
"""How much each of our examples weighs in the meaning expert against one GoEmotions item
(0: left out)."""
MEANING_WEIGHT = 0.3
"""The meaning expert's share in the geometric blend with the routed pair."""

FOLDS = 5
SEARCH_PUBLIC_C = (1.0, 4.0)
SEARCH_GATE_CS = (1.0, 4.0)
SEARCH_GATE_SHARPNESS = (1.0, 2.0)
SEARCH_GATE_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
SEARCH_MEANING_OWN_WEIGHTS = (0.0, 3.0, 10.0)
SEARCH_MEANING_WEIGHTS = (0.0, 0.2, 0.3, 0.4)
OWN_DEV_FLOOR = 0.01
"""A setting may lose at most this much cross-validated macro-F1 on our examples against the
own expert alone: routing in public data must not cost our domain more than that."""


class Setting(NamedTuple):
    """One point of the `search` grid."""

    gate_c: float
    gate_sharpness: float
    public_c: float
    gate_threshold: float
    meaning_own_weight: float
    meaning_weight: float


@dataclass(frozen=True)
class Item:
    """One labelled training or dev text and where it came from."""

    text: str
    label: EmotionLabel
    source: str


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
    features: Matrix | None = None
    """The training features (our rows first), kept for a search's refits."""


def fit_parts(
    own: Sequence[Item],
    public: Sequence[Item],
    lexical: LexicalCache,
    public_cs: Sequence[float],
    *,
    gate: bool = True,
) -> Parts:
    """Vectorizers on all training text, the two experts and the (unshifted) gate."""
    texts = [it.text for it in [*own, *public]]
    words, chars = LearnedEmotionModel.fit_vectorizers(texts, MAX_WORD_FEATURES, MAX_CHAR_FEATURES)
    base = LearnedEmotionModel(
        words, chars, np.zeros((0, 0)), np.zeros(0), lexical_weight=LEXICAL_WEIGHT
    )
    x = base.features(texts, lexical(texts)).to_scipy()
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
    if not gate:
        return Parts(base, experts, np.zeros(0), 0.0, features=x)
    weights, intercept = fit_gate(base, x, n_own)
    return Parts(base, experts, weights, intercept)


def fit_gate(
    base: LearnedEmotionModel, x: Matrix, n_own: int, c: float = GATE_C
) -> tuple[Matrix, float]:
    """The gate: P(a text is like the public data, not ours), from the first `n_own` rows
    (ours) and the rest (public), both classes weighing the same, regularised by `c`."""
    # The gate sees only the text (n-grams), not the lexical features: it tells styles apart.
    lexical_columns = x.shape[1] - len(base.words) - len(base.chars)
    text_only = x[:, : x.shape[1] - lexical_columns]
    gate = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=0)
    gate.fit(text_only, np.r_[np.zeros(n_own), np.ones(x.shape[0] - n_own)])
    weights = np.r_[gate.coef_[0], np.zeros(lexical_columns)].astype(np.float64)
    return weights, float(gate.intercept_[0])


def assemble(
    parts: Parts, public_c: float, gate_threshold: float, sharpness: float = GATE_SHARPNESS
) -> LearnedEmotionModel:
    """The routed model: the public expert takes over where the gate passes `gate_threshold`.

    The gate's logit is shifted by the threshold's and multiplied by `sharpness`; both are
    folded into its weights and bias, so the artefact's format does not change."""
    coef, intercept = parts.public[public_c]
    shift = math.log(gate_threshold / (1.0 - gate_threshold))
    gate = Gate(
        coef,
        intercept,
        sharpness * parts.gate_weights,
        sharpness * (parts.gate_intercept - shift),
    )
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


def fit_meaning(
    public: meaning.Matrix,
    public_labels: Sequence[EmotionLabel],
    own: meaning.Matrix,
    own_labels: Sequence[EmotionLabel],
    own_weight: float,
) -> tuple[Matrix, Matrix]:
    """The meaning expert's coefficients and intercepts (`LABELS` order) on sentence vectors.

    Not balanced by label, unlike the TF-IDF experts: on GoEmotions dev, balancing cost the
    blend about 0.04."""
    x, labels = public, list(public_labels)
    weights = np.ones(len(public_labels))
    if own_weight > 0.0:
        x = np.vstack([public, own])
        labels += own_labels
        weights = np.r_[weights, np.full(len(own_labels), own_weight)]
    # Sample weights (all given) leave labels unbalanced; scikit-learn's default tolerance.
    return LearnedEmotionModel.fit_classifier(x, labels, MEANING_C, weights, tol=1e-4)


def macro_f1(model: LearnedEmotionModel, items: Sequence[Item], lexical: LexicalCache) -> float:
    """Macro-F1 over the labels present in `items` (the argmax label, as the analyzer uses)."""
    texts = [it.text for it in items]
    predicted = model.predict_proba(texts, lexical(texts)).argmax(axis=1)
    return _macro_f1_of([it.label for it in items], predicted)


def search() -> list[dict[str, float]]:
    """Score every setting on GoEmotions dev and, by 5-fold cross-validation, on our examples.

    Our 691 examples are too few for one dev fold (a 138-item fold moves macro-F1 by +-0.03),
    so the own expert, the gate and the meaning expert (when it sees our examples) are
    refitted five times, each without one fifth (`own_fold`), and our score pools the five
    held-out fifths; the GoEmotions dev score is the mean over the five models. The public
    expert never sees our data, so it is fitted once.
    """
    own = own_items(dataset.load("train"))
    go_train, go_dev = read_goemotions("train"), read_goemotions("dev")
    lexical = LexicalCache()
    parts = fit_parts(own, go_train, lexical, SEARCH_PUBLIC_C, gate=False)
    base, x = parts.base, parts.features
    if x is None:
        raise RuntimeError("fit_parts(gate=False) keeps the features")
    go_dev_x = base.features(
        [it.text for it in go_dev], lexical([it.text for it in go_dev])
    ).to_scipy()
    go_dev_gold = [it.label for it in go_dev]
    vectors = meaning.build([it.text for it in [*own, *go_train]])
    own_v = vectors.vectors([it.text for it in own])
    go_train_v = vectors.vectors([it.text for it in go_train])
    go_dev_v = vectors.vectors([it.text for it in go_dev])
    go_train_labels = [it.label for it in go_train]
    log("meaning vectors built")
    public_meaning = Meaning(
        vectors, *fit_meaning(go_train_v, go_train_labels, own_v[:0], [], 0.0), 0.0
    )
    folds = np.asarray([own_fold(it.text) for it in own])
    own_labels = [it.label for it in own]
    predictions: dict[Setting, np.ndarray] = {}
    go_scores: dict[Setting, list[float]] = {}
    alone = np.zeros(len(own), dtype=int)
    alone_go: list[float] = []
    for k in range(FOLDS):
        keep = np.r_[folds != k, np.ones(len(go_train), dtype=bool)]
        fitted = [it for it, f in zip(own, folds, strict=True) if f != k]
        held = np.flatnonzero(folds == k)
        coef, intercept = LearnedEmotionModel.fit_classifier(
            x[: len(own)][folds != k], [it.label for it in fitted], OWN_C
        )
        own_expert = LearnedEmotionModel(
            base.words, base.chars, coef, intercept, lexical_weight=LEXICAL_WEIGHT
        )
        gates = {
            gate_c: Parts(own_expert, parts.public, *fit_gate(base, x[keep], len(fitted), gate_c))
            for gate_c in SEARCH_GATE_CS
        }
        held_x = x[held]
        alone[held] = own_expert.predict_features(held_x).argmax(1)
        alone_go.append(_macro_f1_of(go_dev_gold, own_expert.predict_features(go_dev_x).argmax(1)))
        # The blend's weight is the search's `share` below, so each expert's own is unused.
        experts = {
            w: public_meaning
            if w == 0.0
            else Meaning(
                vectors,
                *fit_meaning(
                    go_train_v, go_train_labels, own_v[folds != k], [it.label for it in fitted], w
                ),
                0.0,
            )
            for w in SEARCH_MEANING_OWN_WEIGHTS
        }
        logits = {
            w: (expert.logits_of(own_v[held]), expert.logits_of(go_dev_v))
            for w, expert in experts.items()
        }
        for gate_c, sharpness, c, threshold in itertools.product(
            SEARCH_GATE_CS, SEARCH_GATE_SHARPNESS, SEARCH_PUBLIC_C, SEARCH_GATE_THRESHOLDS
        ):
            model = assemble(gates[gate_c], c, threshold, sharpness)
            routed_held = model.predict_features(held_x)
            routed_go = model.predict_features(go_dev_x)
            for own_weight, share in itertools.product(experts, SEARCH_MEANING_WEIGHTS):
                setting = Setting(gate_c, sharpness, c, threshold, own_weight, share)
                held_logits, go_logits = logits[own_weight]
                predicted = blend(routed_held, held_logits, share).argmax(1)
                predictions.setdefault(setting, np.zeros(len(own), dtype=int))[held] = predicted
                go_scores.setdefault(setting, []).append(
                    _macro_f1_of(go_dev_gold, blend(routed_go, go_logits, share).argmax(1))
                )
        log(f"fold {k + 1}/{FOLDS} done")
    rows: list[dict[str, float]] = [
        {
            **Setting(0.0, 0.0, 0.0, 1.0, 0.0, 0.0)._asdict(),
            "own_cv_f1": round(_macro_f1_of(own_labels, alone), 4),
            "goemotions_dev_f1": round(float(np.mean(alone_go)), 4),
        }
    ]
    print(json.dumps(rows[0]), "(own expert alone)", flush=True)
    for setting, predicted in predictions.items():
        row = {
            **setting._asdict(),
            "own_cv_f1": round(_macro_f1_of(own_labels, predicted), 4),
            "goemotions_dev_f1": round(float(np.mean(go_scores[setting])), 4),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def own_fold(text: str) -> int:
    """Which of `FOLDS` cross-validation folds an own example is in (by a hash: stable)."""
    return int(hashlib.sha256(f"fold:{text}".encode()).hexdigest()[:8], 16) % FOLDS


def _macro_f1_of(gold: Sequence[EmotionLabel], predicted: np.ndarray) -> float:
    labels = list(EmotionLabel)
    truth = np.asarray([labels.index(g) for g in gold])
    scores = []
    for k in sorted(set(truth.tolist())):
        tp = int(np.sum((truth == k) & (predicted == k)))
        fp = int(np.sum((truth != k) & (predicted == k)))
        fn = int(np.sum((truth == k) & (predicted != k)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def choose(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The best GoEmotions dev score among settings within `OWN_DEV_FLOOR` of the own expert
    alone (the first row, as `search` returns them).

    The floor is the own expert's score, not the grid's best own score: the best of over a
    thousand noisy cross-validated scores sits above what any setting will really do."""
    floor = rows[0]["own_cv_f1"] - OWN_DEV_FLOOR
    allowed = [r for r in rows if r["own_cv_f1"] >= floor]
    return max(allowed, key=lambda r: (r["goemotions_dev_f1"], r["own_cv_f1"]))


def build(out: Path = MODEL_DIR) -> str:
    """Fit the shipped model on every training item and write it to `out`; returns its hash."""
    own = own_items(dataset.load("train"))
    go_train, go_dev = read_goemotions("train"), read_goemotions("dev")
    lexical = LexicalCache()
    parts = fit_parts(own, go_train, lexical, [PUBLIC_C])
    model = assemble(parts, PUBLIC_C, GATE_THRESHOLD)
    vectors = meaning.build([it.text for it in [*own, *go_train]])
    coef, intercept = fit_meaning(
        vectors.vectors([it.text for it in go_train]),
        [it.label for it in go_train],
        vectors.vectors([it.text for it in own]),
        [it.label for it in own],
        MEANING_OWN_WEIGHT,
    )
    model.meaning = Meaning(vectors, coef, intercept, MEANING_WEIGHT)
    model.name = MEANING_MODEL_NAME
    about = {
        "trained_on": {"own train.jsonl": len(own), "goemotions train": len(go_train)},
        "settings": {
            "own_c": OWN_C,
            "public_c": PUBLIC_C,
            "gate_c": GATE_C,
            "gate_sharpness": GATE_SHARPNESS,
            "gate_threshold": GATE_THRESHOLD,
            "max_word_features": MAX_WORD_FEATURES,
            "max_char_features": MAX_CHAR_FEATURES,
            "meaning_c": MEANING_C,
            "meaning_own_weight": MEANING_OWN_WEIGHT,
            "meaning_sif_a": meaning.SIF_A,
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
