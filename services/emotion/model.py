"""The learned emotion model: word and character n-grams plus lexical evidence, one classifier.

Text features (TF-IDF over word uni/bigrams and character 2-4-grams, which survive typos)
are joined with dense features from `LexiconAnalyzer` (its seven label scores, VADER
sentiment, the named signals, shouting and punctuation), and a multinomial logistic regression
learns how to weigh them. The lexical features carry what a few hundred written examples
cannot teach alone; the n-grams learn phrasing no lexicon lists.

The shipped default (`data/model/`) is a routed pair
of such classifiers over one feature space, trained by `services.emotion.training`: one
expert fitted on the project's own customer-service examples, one on GoEmotions' Reddit
comments, and a gate (a logistic regression telling the two kinds of text apart) that blends
them per message. One classifier trained on both lost our domain (the public data outnumbers
ours 50 to 1); routing keeps each expert good at the text it knows. A meaning expert
(`Meaning`, on static MiniLM vectors from `meaning.py`) is blended with the pair's output:
it knows words neither expert was trained on. It is loaded, after a
SHA-256 check, in well under a second, from plain arrays (vocabularies, IDF weights,
coefficients), not a pickle, so loading it runs no code and survives library upgrades.

Serving needs neither scikit-learn nor SciPy: the fitted vectorizers are `shared.tfidf`
transforms and the products plain numpy (importing the two was half the service's start-up).
Training (`train`, `fit_vectorizers`, `fit_classifier`) imports scikit-learn when called.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from services.emotion.meaning import MeaningVectors
from shared.events import EmotionAnalysis, EmotionLabel
from shared.logistic import sigmoid, softmax
from shared.tfidf import (
    Floats,
    Indices,
    SparseRows,
    TfidfTransform,
    char_wb_analyzer,
    hstack_rows,
    word_analyzer,
)

if TYPE_CHECKING:
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

LABELS: tuple[EmotionLabel, ...] = tuple(EmotionLabel)

WORD_PATTERN = r"(?u)\b\w[\w']*\b"
"""Words keep their apostrophes: "don't" and "can't" carry the feeling."""
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 4)
_WORDS = word_analyzer(WORD_PATTERN, WORD_NGRAMS)
_CHARS = char_wb_analyzer(CHAR_NGRAMS)

MODEL_DIR = Path(__file__).parent / "data" / "model"
ARRAYS_FILE = "emotion-model.npz"
MANIFEST_FILE = "emotion-model.json"

# The own-data-only defaults, chosen by 5-fold cross-validation on the training split.
REGULARISATION_C = 16.0
LEXICAL_WEIGHT = 0.1

Matrix = npt.NDArray[np.float64]
Row = tuple[Indices, Floats]
"""One text's sparse row: column indices (ascending) and values."""

OWN_MODEL_NAME = "tfidf-lexicon-logreg-v1"
"""One classifier trained at start-up on the project's own examples (the earlier default)."""
ROUTED_MODEL_NAME = "tfidf-lexicon-routed-v2"
"""The routed model (own expert, GoEmotions expert, gate) without the meaning expert."""
MEANING_MODEL_NAME = "tfidf-lexicon-routed-meaning-v3"
"""The shipped model: the routed pair blended with the meaning expert (`meaning.py`)."""


MODEL_SIGNALS: tuple[str, ...] = (
    "shouting",
    "punctuation_burst",
    "human_request",
    "repetition",
    "urgency",
    "churn_threat",
    "legal_threat",
    "profanity",
    "vulnerability",
)
"""The signals the shipped model was trained on, one feature column each, in this order.

Fixed here rather than read from `SIGNAL_NAMES`: a signal added to the contract later
(`repeat_contact`) must not shift the columns of a model trained before it existed."""


class ArtefactError(RuntimeError):
    """The shipped model is missing, altered or unreadable."""


def lexical_features(text: str, lexical: EmotionAnalysis) -> list[float]:
    """Dense features from the lexicon analysis and the message's surface."""
    letters = [c for c in text if c.isalpha()]
    caps = sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
    present = {s.name for s in lexical.signals}
    return [
        *(lexical.scores.get(label, 0.0) for label in LABELS),
        lexical.sentiment,
        max(0.0, lexical.sentiment),
        max(0.0, -lexical.sentiment),
        lexical.intensity,
        *(1.0 if name in present else 0.0 for name in MODEL_SIGNALS),
        caps,
        min(text.count("!"), 5) / 5,
        min(text.count("?"), 5) / 5,
        min(math.log1p(len(text)) / 8, 1.0),
    ]


LEXICAL_COLUMNS = len(LABELS) + 4 + len(MODEL_SIGNALS) + 4
"""How many values `lexical_features` gives: the columns after the n-grams."""


def word_vectorizer(
    max_features: int | None = None, vocabulary: dict[str, int] | None = None
) -> TfidfVectorizer:
    """The word vectorizer to fit (training only: imports scikit-learn)."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415

    return TfidfVectorizer(
        ngram_range=WORD_NGRAMS,
        sublinear_tf=True,
        min_df=1,
        lowercase=True,
        token_pattern=WORD_PATTERN,
        max_features=max_features,
        vocabulary=vocabulary,
    )


def char_vectorizer(
    max_features: int | None = None, vocabulary: dict[str, int] | None = None
) -> TfidfVectorizer:
    """The character vectorizer to fit (training only: imports scikit-learn)."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415

    return TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=CHAR_NGRAMS,
        sublinear_tf=True,
        min_df=2,
        lowercase=True,
        max_features=max_features,
        vocabulary=vocabulary,
    )


def word_transform(vocabulary: dict[str, int], idf: Floats) -> TfidfTransform:
    """The fitted word vectorizer's transform, in numpy."""
    return TfidfTransform(_WORDS, vocabulary, idf, sublinear_tf=True)


def char_transform(vocabulary: dict[str, int], idf: Floats) -> TfidfTransform:
    """The fitted character vectorizer's transform, in numpy."""
    return TfidfTransform(_CHARS, vocabulary, idf, sublinear_tf=True)


@dataclass(frozen=True)
class Gate:
    """A second expert and the gate that blends it in: P(text is like the expert's data)."""

    coef: Matrix
    """The second expert's coefficients, one row per label in `LABELS` order."""
    intercept: Matrix
    weights: Matrix
    """The gate's coefficients over the same features."""
    bias: float


@dataclass(frozen=True)
class Meaning:
    """The meaning expert: a logistic regression on static sentence vectors (`meaning.py`).

    Its probabilities are blended with the TF-IDF model's geometrically (a weighted mean of
    log-probabilities), `weight` being its share: it moves a prediction where the n-grams
    are unsure or never saw the words, and cannot outvote them where they are sure.
    """

    vectors: MeaningVectors
    coef: Matrix
    """One row per label in `LABELS` order, over the vectors' dimensions."""
    intercept: Matrix
    weight: float

    def logits(self, texts: Sequence[str]) -> Matrix:
        """The expert's logits, one row per text."""
        return self.logits_of(self.vectors.vectors(texts))

    def logits_of(self, vectors: npt.NDArray[np.float32]) -> Matrix:
        """The expert's logits for sentence vectors already computed (`MeaningVectors`)."""
        x = vectors.astype(np.float64)
        return np.asarray(x @ self.coef.T + self.intercept, dtype=np.float64)


def blend(probs: Matrix, logits: Matrix, weight: float) -> Matrix:
    """Geometric blend: softmax((1 - weight) * log(probs) + weight * log(softmax(logits)))."""
    # log(softmax(z)) is z less a constant per row, which the outer softmax drops.
    return softmax((1.0 - weight) * np.log(np.maximum(probs, 1e-12)) + weight * logits)


class LearnedEmotionModel:
    """TF-IDF + lexical features -> multinomial logistic regression(s) over the seven labels."""

    name = OWN_MODEL_NAME

    def __init__(
        self,
        words: TfidfTransform,
        chars: TfidfTransform,
        coef: Matrix,
        intercept: Matrix,
        *,
        lexical_weight: float = LEXICAL_WEIGHT,
        gate: Gate | None = None,
        meaning: Meaning | None = None,
        name: str | None = None,
    ) -> None:
        """A fitted model; `coef` rows and `intercept` entries are in `LABELS` order."""
        self.words = words
        self.chars = chars
        self.coef = coef
        self.intercept = intercept
        self.lexical_weight = lexical_weight
        self.gate = gate
        self.meaning = meaning
        # Transposed once, contiguous: `features @ coef.T` on a view copies the whole matrix
        # (megabytes) on every call, which was most of a single message's cost.
        self._second_t = None if gate is None else np.ascontiguousarray(gate.coef.T)
        if name is not None:
            self.name = name
        self._word_count = len(words)
        self._char_count = len(chars)
        self._last: tuple[tuple[str, ...], list[Row], list[Row]] = ((), [], [])
        self._vocabulary = np.asarray(words.terms)

    @property
    def coef(self) -> Matrix:
        """The (first) expert's coefficients, one row per label in `LABELS` order."""
        return self._coef

    @coef.setter
    def coef(self, value: Matrix) -> None:
        self._coef = value
        self._coef_t = np.ascontiguousarray(value.T)

    @staticmethod
    def fit_vectorizers(
        texts: Sequence[str],
        max_word_features: int | None = None,
        max_char_features: int | None = None,
    ) -> tuple[TfidfTransform, TfidfTransform]:
        """The word and character TF-IDF vectorizers, fitted on `texts` by scikit-learn."""
        words = word_vectorizer(max_word_features).fit(texts)
        chars = char_vectorizer(max_char_features).fit(texts)
        return (
            word_transform(words.vocabulary_, words.idf_),
            char_transform(chars.vocabulary_, chars.idf_),
        )

    @staticmethod
    def fit_classifier(
        features: sparse.csr_matrix | SparseRows | npt.NDArray[np.float32],
        labels: Sequence[EmotionLabel],
        c: float,
        sample_weight: npt.NDArray[np.float64] | None = None,
        tol: float = 1e-3,
    ) -> tuple[Matrix, Matrix]:
        """Multinomial logistic regression; coefficients and intercepts in `LABELS` order.

        Labels weigh the same in total unless `sample_weight` is given. Fitted by
        scikit-learn (imported here: training only)."""
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        if isinstance(features, SparseRows):
            features = features.to_scipy()
        classifier = LogisticRegression(
            C=c,
            max_iter=3000,
            tol=tol,
            class_weight=None if sample_weight is not None else "balanced",
            random_state=0,
        )
        classifier.fit(features, [label.value for label in labels], sample_weight=sample_weight)
        order = [list(classifier.classes_).index(label.value) for label in LABELS]
        return (
            np.asarray(classifier.coef_[order], dtype=np.float64),
            np.asarray(classifier.intercept_[order], dtype=np.float64),
        )

    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        labels: Sequence[EmotionLabel],
        lexical: Sequence[EmotionAnalysis],
        *,
        c: float = REGULARISATION_C,
        lexical_weight: float = LEXICAL_WEIGHT,
        max_word_features: int | None = None,
        max_char_features: int | None = None,
    ) -> LearnedEmotionModel:
        """One classifier fitted on labelled texts, every label weighing the same in total."""
        words, chars = cls.fit_vectorizers(texts, max_word_features, max_char_features)
        model = cls(words, chars, np.zeros((0, 0)), np.zeros(0), lexical_weight=lexical_weight)
        model.coef, model.intercept = cls.fit_classifier(model.features(texts, lexical), labels, c)
        return model

    def features(self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]) -> SparseRows:
        """The model's input: word and character TF-IDF, then the weighted lexical features.

        `SparseRows.to_scipy()` gives scikit-learn the same matrix for training."""
        return self._features(texts, lexical)[0]

    def _features(
        self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]
    ) -> tuple[SparseRows, list[Row], list[Row]]:
        words = [self.words.transform_one(t) for t in texts]
        chars = [self.chars.transform_one(t) for t in texts]
        dense = [_dense_row(t, a, self.lexical_weight) for t, a in zip(texts, lexical, strict=True)]
        widths = (self._word_count, self._char_count, LEXICAL_COLUMNS)
        rows = (
            hstack_rows([(w[0], w[1], widths[0]), (c[0], c[1], widths[1]), (d[0], d[1], widths[2])])
            for w, c, d in zip(words, chars, dense, strict=True)
        )
        return SparseRows.from_rows(rows, sum(widths)), words, chars

    def routing(self, features: sparse.csr_matrix | SparseRows) -> Matrix:
        """The second expert's share of each text's prediction (zeros without a gate)."""
        if self.gate is None:
            return np.zeros(features.shape[0])
        logits = np.asarray(features @ self.gate.weights, dtype=np.float64) + self.gate.bias
        return sigmoid(logits)

    def predict_proba(self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]) -> Matrix:
        """Probabilities, one row per text, columns in `LABELS` order."""
        if not texts:
            return np.zeros((0, len(LABELS)))
        x, words, chars = self._features(texts, lexical)
        # Kept (texts and rows as one tuple, so threads never mix them) for the
        # explanation that follows: vectorising again was a third of a message's cost.
        self._last = (tuple(texts), words, chars)
        probs = self.predict_features(x)
        if self.meaning is None or self.meaning.weight <= 0.0:
            return probs
        return blend(probs, self.meaning.logits(texts), self.meaning.weight)

    def predict_features(self, x: sparse.csr_matrix | SparseRows) -> Matrix:
        """Probabilities from `features(...)` rows, columns in `LABELS` order."""
        probs = softmax(np.asarray(x @ self._coef_t, dtype=np.float64) + self.intercept)
        if self.gate is None or self._second_t is None:
            return probs
        share = self.routing(x)[:, None]
        second = softmax(np.asarray(x @ self._second_t, dtype=np.float64) + self.gate.intercept)
        return np.asarray((1.0 - share) * probs + share * second, dtype=np.float64)

    def top_words(self, text: str, label: EmotionLabel, k: int = 3) -> list[str]:
        """The words and word pairs in `text` that pushed hardest towards `label`."""
        return self.top_words_batch([text], [label], k)[0]

    def top_words_batch(
        self, texts: Sequence[str], labels: Sequence[EmotionLabel], k: int = 3
    ) -> list[list[str]]:
        """`top_words` for many texts, vectorised once (a vectorizer call costs ~1 ms)."""
        if not texts:
            return []
        last_texts, words, chars = self._last
        if last_texts != tuple(texts):
            words = [self.words.transform_one(t) for t in texts]
            chars = [self.chars.transform_one(t) for t in texts] if self.gate is not None else []
        share = np.zeros(len(texts))
        if self.gate is not None:
            # Blend the experts' word weights as the gate blends their predictions; the gate
            # reads words and characters only (its lexical weights are zero).
            on_words = self.gate.weights[: self._word_count]
            on_chars = self.gate.weights[self._word_count : self._word_count + self._char_count]
            logits = np.asarray(
                [
                    float(np.dot(w[1], on_words[w[0]]) + np.dot(c[1], on_chars[c[0]]))
                    for w, c in zip(words, chars, strict=True)
                ]
            )
            share = sigmoid(logits + self.gate.bias)
        result = []
        for n, label in enumerate(labels):
            indices, data = words[n]
            # Only the text's own words: a full row of weights per text cost megabytes a batch.
            weights = self.coef[LABELS.index(label), indices]
            if self.gate is not None:
                second = self.gate.coef[LABELS.index(label), indices]
                weights = (1.0 - share[n]) * weights + share[n] * second
            contributions = data * weights
            ranked = sorted(zip(contributions, indices, strict=True), reverse=True)
            result.append([str(self._vocabulary[i]) for value, i in ranked[:k] if value > 0])
        return result

    def save(self, folder: Path, about: dict[str, Any]) -> str:
        """Write the arrays and a manifest (with their SHA-256) to `folder`; returns the hash.

        The archive is written with fixed timestamps, so the same weights give the same bytes.
        """
        arrays = {
            "word_terms": self._vocabulary.astype(str),
            "word_idf": np.asarray(self.words.idf, dtype=np.float32),
            "char_terms": np.asarray(self.chars.terms).astype(str),
            "char_idf": np.asarray(self.chars.idf, dtype=np.float32),
            "coef": self.coef.astype(np.float32),
            "intercept": self.intercept.astype(np.float32),
        }
        if self.gate is not None:
            arrays["second_coef"] = self.gate.coef.astype(np.float32)
            arrays["second_intercept"] = self.gate.intercept.astype(np.float32)
            arrays["gate_weights"] = self.gate.weights.astype(np.float32)
            arrays["gate_bias"] = np.asarray([self.gate.bias], dtype=np.float32)
        if self.meaning is not None:
            vectors = self.meaning.vectors
            arrays["meaning_table"] = vectors.table
            arrays["meaning_scale"] = vectors.scale
            arrays["meaning_piece_weight"] = vectors.weight
            arrays["meaning_coef"] = self.meaning.coef.astype(np.float32)
            arrays["meaning_intercept"] = self.meaning.intercept.astype(np.float32)
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, array in arrays.items():
                member = io.BytesIO()
                np.lib.format.write_array(member, array, allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, member.getvalue())
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        (folder / ARRAYS_FILE).write_bytes(data)
        manifest = {
            "name": self.name,
            "sha256": digest,
            "lexical_weight": self.lexical_weight,
            "meaning_weight": None if self.meaning is None else self.meaning.weight,
            "labels": [label.value for label in LABELS],
            **about,
        }
        (folder / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return digest

    @classmethod
    def load(cls, folder: Path = MODEL_DIR) -> LearnedEmotionModel:
        """Load a saved model after checking its arrays against the manifest's SHA-256."""
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
            data = (folder / ARRAYS_FILE).read_bytes()
        except (OSError, ValueError) as exc:
            raise ArtefactError(f"emotion model in {folder} is unreadable: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.get("sha256"):
            raise ArtefactError(
                f"{folder / ARRAYS_FILE} has SHA-256 {digest}, the manifest says "
                f"{manifest.get('sha256')}; rebuild it with `make emotion-model`"
            )
        if manifest.get("labels") != [label.value for label in LABELS]:
            raise ArtefactError(f"{folder / MANIFEST_FILE} was trained for other labels")
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            words = word_transform(_index(arrays["word_terms"]), arrays["word_idf"])
            chars = char_transform(_index(arrays["char_terms"]), arrays["char_idf"])
            coef = arrays["coef"].astype(np.float64)
            intercept = arrays["intercept"].astype(np.float64)
            gate = None
            if "gate_weights" in arrays:
                gate = Gate(
                    coef=arrays["second_coef"].astype(np.float64),
                    intercept=arrays["second_intercept"].astype(np.float64),
                    weights=arrays["gate_weights"].astype(np.float64),
                    bias=float(arrays["gate_bias"][0]),
                )
            meaning = None
            if "meaning_table" in arrays:
                meaning = Meaning(
                    MeaningVectors(
                        arrays["meaning_table"],
                        arrays["meaning_scale"],
                        arrays["meaning_piece_weight"],
                    ),
                    coef=arrays["meaning_coef"].astype(np.float64),
                    intercept=arrays["meaning_intercept"].astype(np.float64),
                    weight=float(manifest["meaning_weight"]),
                )
        return cls(
            words,
            chars,
            coef,
            intercept,
            lexical_weight=float(manifest["lexical_weight"]),
            gate=gate,
            meaning=meaning,
            name=str(manifest["name"]),
        )


def _index(terms: npt.NDArray[np.str_]) -> dict[str, int]:
    return {str(term): i for i, term in enumerate(terms)}


def _dense_row(text: str, lexical: EmotionAnalysis, weight: float) -> Row:
    """The weighted lexical features as a sparse row (zeros left out, as SciPy leaves them)."""
    values = np.asarray(lexical_features(text, lexical), dtype=np.float64) * weight
    present = np.flatnonzero(values)
    return present.astype(np.int64), values[present]
