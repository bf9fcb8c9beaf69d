"""The learned emotion model: word and character n-grams plus lexical evidence, one classifier.

Text features (TF-IDF over word uni/bigrams and character 2-4-grams, which survive typos)
are joined with dense features from `LexiconAnalyzer` (its seven label scores, VADER
sentiment, the named signals, shouting and punctuation), and a multinomial logistic regression
learns how to weigh them. The lexical features carry what our ~700 written examples cannot
teach alone; the n-grams learn customer-service phrasing no lexicon lists.

The model trains in about a second from the examples shipped in `data/`, so every process
builds it at start-up: no opaque binary artifact, and the data and the model never drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from services.emotion.dataset import Example
from shared.events import SIGNAL_NAMES, EmotionAnalysis, EmotionLabel

LABELS: tuple[EmotionLabel, ...] = tuple(EmotionLabel)

WORD_PATTERN = r"(?u)\b\w[\w']*\b"
"""Words keep their apostrophes: "don't" and "can't" carry the feeling."""

# Chosen by 5-fold cross-validation on the training split only (see DATASHEET.md).
REGULARISATION_C = 16.0
LEXICAL_WEIGHT = 0.1

Matrix = npt.NDArray[np.float64]


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
        *(1.0 if name in present else 0.0 for name in SIGNAL_NAMES),
        caps,
        min(text.count("!"), 5) / 5,
        min(text.count("?"), 5) / 5,
        min(math.log1p(len(text)) / 8, 1.0),
    ]


class LearnedEmotionModel:
    """TF-IDF + lexical features -> multinomial logistic regression over the seven labels."""

    name = "tfidf-lexicon-logreg-v1"

    def __init__(
        self,
        words: TfidfVectorizer,
        chars: TfidfVectorizer,
        classifier: LogisticRegression,
    ) -> None:
        self.words = words
        self.chars = chars
        self.classifier = classifier
        self._word_count = len(words.vocabulary_)
        self._vocabulary = np.asarray(words.get_feature_names_out())
        order = [list(classifier.classes_).index(label.value) for label in LABELS]
        self._order = np.asarray(order)

    @classmethod
    def train(
        cls,
        examples: Sequence[Example],
        lexical: Sequence[EmotionAnalysis],
        c: float = REGULARISATION_C,
    ) -> LearnedEmotionModel:
        """Fit on labelled examples; `lexical` holds the lexicon analysis of each text."""
        texts = [ex.text for ex in examples]
        words = TfidfVectorizer(
            ngram_range=(1, 2),
            sublinear_tf=True,
            min_df=1,
            lowercase=True,
            token_pattern=WORD_PATTERN,
        )
        chars = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2, lowercase=True
        )
        word_matrix = words.fit_transform(texts)
        char_matrix = chars.fit_transform(texts)
        dense = sparse.csr_matrix(
            np.asarray([lexical_features(t, a) for t, a in zip(texts, lexical, strict=True)])
            * LEXICAL_WEIGHT
        )
        features = sparse.hstack([word_matrix, char_matrix, dense], format="csr")
        classifier = LogisticRegression(
            C=c, max_iter=3000, tol=1e-3, class_weight="balanced", random_state=0
        )
        classifier.fit(features, [ex.label.value for ex in examples])
        return cls(words, chars, classifier)

    def _features(
        self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]
    ) -> sparse.csr_matrix:
        dense = sparse.csr_matrix(
            np.asarray([lexical_features(t, a) for t, a in zip(texts, lexical, strict=True)])
            * LEXICAL_WEIGHT
        )
        return sparse.hstack(
            [self.words.transform(texts), self.chars.transform(texts), dense], format="csr"
        )

    def predict_proba(self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]) -> Matrix:
        """Probabilities, one row per text, columns in `LABELS` order."""
        if not texts:
            return np.zeros((0, len(LABELS)))
        probs = self.classifier.predict_proba(self._features(texts, lexical))
        return np.asarray(probs[:, self._order], dtype=np.float64)

    def top_words(self, text: str, label: EmotionLabel, k: int = 3) -> list[str]:
        """The words and word pairs in `text` that pushed hardest towards `label`."""
        row = self.words.transform([text])
        if row.nnz == 0:
            return []
        class_index = list(self.classifier.classes_).index(label.value)
        weights = self.classifier.coef_[class_index, : self._word_count]
        contributions = row.data * weights[row.indices]
        ranked = sorted(zip(contributions, row.indices, strict=True), reverse=True)
        return [str(self._vocabulary[i]) for value, i in ranked[:k] if value > 0]
