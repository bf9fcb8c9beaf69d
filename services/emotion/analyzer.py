"""How a customer feels in one message: label, scores, sentiment, intensity, signals, and why.

`EmotionAnalyzer` joins the lexical evidence (`lexicon.LexiconAnalyzer`) with a learned
classifier (`model.LearnedEmotionModel`, the routed model loaded from its hash-checked
artefact, or any `EmotionModel`, such as a transformer on a GPU node). The
classifier decides the label and scores; the lexicon contributes features, the named signals
with their evidence, and words for the explanation. Input the model cannot read (empty, huge,
binary junk, another language) gets a neutral analysis with confidence 0.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import sklearn

from services.emotion import dataset
from services.emotion.lexicon import LexiconAnalyzer
from services.emotion.model import LABELS, LearnedEmotionModel, Matrix
from shared.events import EmotionAnalysis, EmotionLabel

log = logging.getLogger(__name__)

MAX_CHARS = 20_000
"""Longer input is not a chat message; it is refused, not analysed for minutes."""

# How each label leans: sentiment is this valence, weighted by the label probabilities,
# blended with VADER's lexical sentiment. A customer on hold for an hour is negative even
# when no word in the message is.
VALENCE: dict[EmotionLabel, float] = {
    EmotionLabel.JOY: 0.9,
    EmotionLabel.NEUTRAL: 0.0,
    EmotionLabel.CONFUSION: -0.2,
    EmotionLabel.ANXIETY: -0.55,
    EmotionLabel.SADNESS: -0.7,
    EmotionLabel.FRUSTRATION: -0.7,
    EmotionLabel.ANGER: -0.9,
}
VALENCE_WEIGHT = 0.7

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "it",
        "they",
        "them",
        "this",
        "that",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "am",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "not",
        "no",
        "yes",
        "and",
        "or",
        "but",
        "if",
        "so",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "up",
        "out",
        "about",
        "what",
        "when",
        "where",
        "why",
        "how",
        "which",
        "who",
        "can",
        "could",
        "would",
        "should",
        "will",
        "just",
        "please",
        "thanks",
        "thank",
        "hi",
        "hello",
        "there",
        "here",
        "all",
        "any",
        "some",
        "get",
        "got",
    ]
)


class EmotionModel(Protocol):
    """What a classifier must offer to stand behind `EmotionAnalyzer`."""

    name: str

    def predict_proba(self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]) -> Matrix:
        """Probabilities, one row per text, columns in `model.LABELS` order."""
        ...


class EmotionAnalyzer:
    """Analyses customer messages, one at a time or in batches."""

    def __init__(
        self, model: EmotionModel | None = None, lexicon: LexiconAnalyzer | None = None
    ) -> None:
        """Build the analyzer; with no model given, load the shipped learned model.

        Loading checks the artefact's SHA-256 and raises `model.ArtefactError` when it is
        missing or altered: a service must not start on weights nobody reviewed.
        """
        self.lexicon = lexicon or LexiconAnalyzer()
        examples = dataset.load("train")
        self.model = model if model is not None else LearnedEmotionModel.load()
        self._vocabulary = _english_vocabulary(self.lexicon, [ex.text for ex in examples])

    @property
    def model_name(self) -> str:
        """The classifier's name, as recorded on every analysis."""
        return self.model.name

    def analyze(self, text: str, previous_customer_texts: Sequence[str] = ()) -> EmotionAnalysis:
        """Analyse one message; earlier customer messages of the conversation reveal repetition."""
        return self.analyze_batch([text], [previous_customer_texts])[0]

    def analyze_batch(
        self,
        texts: Sequence[str],
        previous_customer_texts: Sequence[Sequence[str]] | None = None,
    ) -> list[EmotionAnalysis]:
        """Analyse many messages with one classifier call. Never raises."""
        history = previous_customer_texts or [()] * len(texts)
        results: list[EmotionAnalysis | None] = [None] * len(texts)
        readable: list[int] = []
        for i, text in enumerate(texts):
            reason = self.unreadable(text)
            if reason is None:
                readable.append(i)
            else:
                results[i] = self._neutral(f"neutral: {reason}", confidence=0.0)
        if readable:
            try:
                lexical = [self.lexicon.analyze(texts[i], history[i]) for i in readable]
                # The model's own vectorisers make finite, well-formed input: scikit-learn's
                # per-call checks of it were 6-17% of a message's analysis (see "CPU per
                # turn" in docs/architecture.md). Thread-local, so only this call skips them.
                with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                    probs = self.model.predict_proba([texts[i] for i in readable], lexical)
                    words = self._evidence([texts[i] for i in readable], probs)
                for row, i, lex, said in zip(probs, readable, lexical, words, strict=True):
                    results[i] = self._combine(row, lex, said)
            except Exception:
                log.exception("emotion model failed; neutral stand-ins returned")
                for i in readable:
                    results[i] = self._neutral(
                        "neutral: analysis failed, neutral stand-in", confidence=0.0, degraded=True
                    )
        return [r for r in results if r is not None]

    def unreadable(self, text: str) -> str | None:
        """Why the model cannot read this text, or None when it can."""
        if not isinstance(text, str) or not text.strip():
            return "empty message"
        if len(text) > MAX_CHARS:
            return f"message too long ({len(text)} characters)"
        visible = [c for c in text if not c.isspace()]
        junk = sum(
            1
            for c in visible
            if unicodedata.category(c) in {"Cc", "Cf", "Co", "Cs", "Cn"} or c == "\ufffd"
        )
        if junk > 0.1 * len(visible):
            return "message is not readable text"
        letters = [c for c in visible if c.isalpha()]
        latin = sum(1 for c in letters if c.isascii())
        if len(letters) >= 3 and latin < 0.5 * len(letters):
            return "message is not in English"
        words = _WORD.findall(text.lower())
        if len(words) >= 4:
            known = sum(1 for w in words if w in self._vocabulary)
            if known < 0.4 * len(words):
                return "message is not in English"
        return None

    def _evidence(self, texts: Sequence[str], probs: Matrix) -> list[list[str]]:
        """Per text, up to three content words or phrases behind its label."""
        if not isinstance(self.model, LearnedEmotionModel):
            return [[] for _ in texts]
        labels = [LABELS[int(np.argmax(row))] for row in probs]
        return [_content_phrases(w)[:3] for w in self.model.top_words_batch(texts, labels, k=8)]

    def _combine(
        self, probs: Matrix, lexical: EmotionAnalysis, words: Sequence[str]
    ) -> EmotionAnalysis:
        scores = {label: round(float(p), 4) for label, p in zip(LABELS, probs, strict=True)}
        label = LABELS[int(np.argmax(probs))]
        valence = sum(scores[lab] * VALENCE[lab] for lab in LABELS)
        sentiment = VALENCE_WEIGHT * valence + (1 - VALENCE_WEIGHT) * lexical.sentiment
        sentiment = max(-1.0, min(1.0, sentiment))
        strength = 0.0 if label is EmotionLabel.NEUTRAL else scores[label]
        intensity = max(0.0, min(1.0, 0.5 * strength + 0.5 * lexical.intensity))
        return EmotionAnalysis(
            label=label,
            scores=scores,
            sentiment=round(sentiment, 4),
            intensity=round(intensity, 4),
            signals=lexical.signals,
            explanation=self._explain(label, scores[label], lexical, sentiment, words),
            model=self.model_name,
            confidence=round(scores[label], 4),
        )

    def _explain(
        self,
        label: EmotionLabel,
        probability: float,
        lexical: EmotionAnalysis,
        sentiment: float,
        words: Sequence[str],
    ) -> str:
        parts = [f"{label.value} ({probability:.0%})"]
        if words:
            parts.append("words: " + ", ".join(f"'{w}'" for w in words))
        if lexical.signals:
            parts.append("signals: " + ", ".join(s.name for s in lexical.signals))
        parts.append(f"sentiment {sentiment:+.2f}")
        return "; ".join(parts)

    def _neutral(
        self, explanation: str, *, confidence: float, degraded: bool = False
    ) -> EmotionAnalysis:
        scores = dict.fromkeys(EmotionLabel, 0.0)
        scores[EmotionLabel.NEUTRAL] = 1.0
        return EmotionAnalysis(
            label=EmotionLabel.NEUTRAL,
            scores=scores,
            sentiment=0.0,
            intensity=0.0,
            explanation=explanation,
            model=self.model_name,
            confidence=confidence,
            degraded=degraded,
        )


def own_data_model(lexicon: LexiconAnalyzer | None = None) -> LearnedEmotionModel:
    """The earlier default: one classifier trained on the project's own examples (~1 s)."""
    lex = lexicon or LexiconAnalyzer()
    examples = dataset.load("train")
    return LearnedEmotionModel.train(
        [ex.text for ex in examples],
        [ex.label for ex in examples],
        [lex.analyze(ex.text) for ex in examples],
    )


def _content_phrases(phrases: Sequence[str]) -> list[str]:
    """The phrases that carry meaning: "this is" or "do i" explain nothing to an agent."""
    return [p for p in phrases if any(w not in _FUNCTION_WORDS for w in p.split())]


def _english_vocabulary(lexicon: LexiconAnalyzer, texts: Sequence[str]) -> frozenset[str]:
    """Words that tell English from other languages: VADER's, ours, the training messages'.

    Whatever model stands behind the analyzer, the same words count, so swapping in another
    classifier does not change which messages are readable.
    """
    words = set(_FUNCTION_WORDS)
    words.update(w for w in lexicon.vader_words() if w.isalpha())
    for text in texts:
        words.update(_WORD.findall(text.lower()))
    return frozenset(words)
