"""How a customer feels in one message: label, scores, sentiment, intensity, signals, and why.

`EmotionAnalyzer` joins the lexical evidence (`lexicon.LexiconAnalyzer`) with a learned
classifier (`model.LearnedEmotionModel`, the routed model loaded from its hash-checked
artefact, or any `EmotionModel`, such as a transformer on a GPU node). The
classifier decides the label and scores; the lexicon contributes features, the named signals
with their evidence, and words for the explanation. Chat and social text is made plain first
(`normalize`: links and handles removed, hashtags split into words, emoji and emoticons turned
into the emotion words they stand for); sarcasm cues (`irony`) move the classifier's joy to the
negative labels. Input the model cannot read (empty, huge, binary junk, another language by the
offline language identifier) gets a neutral analysis with confidence 0.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from services.emotion import dataset
from services.emotion.lexicon import LexiconAnalyzer
from services.emotion.model import LABELS, LearnedEmotionModel, Matrix
from services.emotion.normalize import Normalized, Normalizer
from shared.events import EmotionAnalysis, EmotionLabel
from shared.language import LanguageIdentifier, default_identifier, language_of

log = logging.getLogger(__name__)

MAX_CHARS = 20_000
"""Longer input is not a chat message; it is refused, not analysed for minutes."""

# How each label leans: sentiment is this valence, weighted by the label probabilities
# (sharpened, below), blended with VADER's lexical sentiment. A customer on hold for an hour
# is negative even when no word in the message is. Confusion leans neither way: "how do I
# find my card?" is a question, not a complaint (at -0.2 it put most plain questions below
# -0.1).
VALENCE: dict[EmotionLabel, float] = {
    EmotionLabel.JOY: 0.9,
    EmotionLabel.NEUTRAL: 0.0,
    EmotionLabel.CONFUSION: 0.0,
    EmotionLabel.ANXIETY: -0.55,
    EmotionLabel.SADNESS: -0.7,
    EmotionLabel.FRUSTRATION: -0.7,
    EmotionLabel.ANGER: -0.9,
}
VALENCE_WEIGHT = 0.7
VALENCE_SHARPNESS = 2.0
"""The label probabilities are raised to this power (and renormalised) before they weigh the
valences. Five of the seven labels are negative, so an unsure model's spread over them
pulled a message negative even where neutral or joy led; sharpened, the leading label decides.
Chosen on GoEmotions dev (sign 0.873 -> 0.880, three-way at +-0.05 0.618 -> 0.652, with
confusion at 0)."""

# With a sarcasm cue, this share of the classifier's joy (and half this share of its neutral)
# goes to the negative labels, in proportion to what the classifier gave them, frustration
# with a head start (the label guide: sarcasm about a failure is usually frustration).
IRONY_SHIFT = 0.9
_IRONY_FRUSTRATION_PRIOR = 0.2
_NEGATIVE = (
    EmotionLabel.ANGER,
    EmotionLabel.FRUSTRATION,
    EmotionLabel.ANXIETY,
    EmotionLabel.SADNESS,
)

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
        self,
        model: EmotionModel | None = None,
        lexicon: LexiconAnalyzer | None = None,
        normalizer: Normalizer | None = None,
        language: LanguageIdentifier | None = None,
    ) -> None:
        """Build the analyzer; with no model given, load the shipped learned model.

        Loading checks the artefact's SHA-256 and raises `model.ArtefactError` when it is
        missing or altered: a service must not start on weights nobody reviewed.
        """
        self.lexicon = lexicon or LexiconAnalyzer()
        self.model = model if model is not None else LearnedEmotionModel.load()
        self.normalizer = normalizer or Normalizer()
        self._language = language or default_identifier()

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
        plain: list[Normalized] = []
        for i, text in enumerate(texts):
            reason, normalized = self._read(text)
            if reason is None and normalized is not None:
                readable.append(i)
                plain.append(normalized)
            else:
                results[i] = self._neutral(f"neutral: {reason}", confidence=0.0)
        if readable:
            try:
                plain_texts = [p.text for p in plain]
                lexical = [
                    self.lexicon.analyze(
                        p.text, [self.normalizer.normalize(h).text for h in history[i]]
                    )
                    for p, i in zip(plain, readable, strict=True)
                ]
                probs = self.model.predict_proba(plain_texts, lexical)
                irony = [self.lexicon.irony.find(t) for t in plain_texts]
                probs = np.vstack(
                    [_ironic(row) if cues else row for row, cues in zip(probs, irony, strict=True)]
                )
                words = self._evidence(plain_texts, probs)
                for row, i, lex, said, p, cues in zip(
                    probs, readable, lexical, words, plain, irony, strict=True
                ):
                    results[i] = self._combine(row, lex, said, p.faces, cues)
            except Exception:
                log.exception("emotion model failed; neutral stand-ins returned")
                for i in readable:
                    results[i] = self._neutral(
                        "neutral: analysis failed, neutral stand-in", confidence=0.0, degraded=True
                    )
        return [r for r in results if r is not None]

    def unreadable(self, text: str) -> str | None:
        """Why the model cannot read this text, or None when it can."""
        return self._read(text)[0]

    def _read(self, text: str) -> tuple[str | None, Normalized | None]:
        """Why the text cannot be read (or None), and the text made plain when it can."""
        if not isinstance(text, str) or not text.strip():
            return "empty message", None
        if len(text) > MAX_CHARS:
            return f"message too long ({len(text)} characters)", None
        if _junk(text):
            return "message is not readable text", None
        normalized = self.normalizer.normalize(text)
        if not normalized.text.strip():
            return "empty message (only links, handles or symbols)", None
        return _not_english(normalized.text, self._language), normalized

    def _evidence(self, texts: Sequence[str], probs: Matrix) -> list[list[str]]:
        """Per text, up to three content words or phrases behind its label."""
        if not isinstance(self.model, LearnedEmotionModel):
            return [[] for _ in texts]
        labels = [LABELS[int(np.argmax(row))] for row in probs]
        return [_content_phrases(w)[:3] for w in self.model.top_words_batch(texts, labels, k=8)]

    def _combine(
        self,
        probs: Matrix,
        lexical: EmotionAnalysis,
        words: Sequence[str],
        faces: Sequence[str] = (),
        irony: Sequence[str] = (),
    ) -> EmotionAnalysis:
        scores = {label: round(float(p), 4) for label, p in zip(LABELS, probs, strict=True)}
        label = LABELS[int(np.argmax(probs))]
        sharpened = np.power(np.maximum(probs, 0.0), VALENCE_SHARPNESS)
        weights = sharpened / max(float(sharpened.sum()), 1e-12)
        valence = sum(float(w) * VALENCE[lab] for lab, w in zip(LABELS, weights, strict=True))
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
            explanation=self._explain(
                label, scores[label], lexical, sentiment, words, faces, irony
            ),
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
        faces: Sequence[str] = (),
        irony: Sequence[str] = (),
    ) -> str:
        parts = [f"{label.value} ({probability:.0%})"]
        if words:
            parts.append("words: " + ", ".join(f"'{w}'" for w in words))
        if faces:
            parts.append("emoji: " + " ".join(dict.fromkeys(faces)))
        if irony:
            parts.append("irony: " + ", ".join(f"'{c}'" for c in irony))
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


_NEGATIONS = frozenset({"not", "no", "never"})


def _content_phrases(phrases: Sequence[str]) -> list[str]:
    """The phrases that carry meaning, without the function words at their edges.

    "this is" or "do i" explain nothing to an agent, and in "the new" or "me cry" only "new"
    and "cry" do; a leading negation stays ("not happy"). A phrase that trims to one already
    named is named once.
    """
    kept: list[str] = []
    for phrase in phrases:
        tokens = phrase.split()
        while tokens and tokens[0] in _FUNCTION_WORDS and tokens[0] not in _NEGATIONS:
            tokens.pop(0)
        while tokens and tokens[-1] in _FUNCTION_WORDS:
            tokens.pop()
        trimmed = " ".join(tokens)
        if trimmed and trimmed not in kept:
            kept.append(trimmed)
    return kept


def _junk(text: str) -> bool:
    """Mostly control, private-use or replacement characters: binary, not a message."""
    # Joiners and variation selectors belong to emoji ("🏳️‍🌈"), not to junk.
    visible = [c for c in text if not c.isspace() and c not in "\u200d\ufe0e\ufe0f"]
    junk = sum(
        1
        for c in visible
        if unicodedata.category(c) in {"Cc", "Cf", "Co", "Cs", "Cn"} or c == "\ufffd"
    )
    return junk > 0.1 * len(visible)


def _not_english(text: str, identifier: LanguageIdentifier) -> str | None:
    """ "message is not in English" when it is not, by script or by the language identifier.

    Text in a non-Latin script is refused outright; Latin-script text is refused only when the
    offline identifier (py3langid) is confident it is another language. Text too short to
    identify ("ok", "Hola!") is read: a wrong guess there costs less than refusing English.
    """
    letters = [c for c in text if c.isalpha()]
    latin = sum(1 for c in letters if c.isascii() or "LATIN" in unicodedata.name(c, ""))
    if len(letters) >= 3 and latin < 0.5 * len(letters):
        return "message is not in English"
    language = language_of(text, identifier)
    if language is not None and language != "en":
        return "message is not in English"
    return None


def _ironic(row: Matrix) -> Matrix:
    """The classifier's probabilities with sarcastic praise moved to the negative labels."""
    out = np.array(row, dtype=np.float64)
    joy = LABELS.index(EmotionLabel.JOY)
    neutral = LABELS.index(EmotionLabel.NEUTRAL)
    moved = IRONY_SHIFT * out[joy] + 0.5 * IRONY_SHIFT * out[neutral]
    out[joy] *= 1 - IRONY_SHIFT
    out[neutral] *= 1 - 0.5 * IRONY_SHIFT
    negative = [LABELS.index(label) for label in _NEGATIVE]
    weights = out[negative].copy()
    weights[_NEGATIVE.index(EmotionLabel.FRUSTRATION)] += _IRONY_FRUSTRATION_PRIOR
    out[negative] += moved * weights / weights.sum()
    return out
