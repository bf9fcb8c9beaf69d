"""Lexical evidence: curated customer-service lexicons, VADER sentiment and named signals.

Fully explainable, so every cue can be traced to the words that caused it. On its own it is
the lexicon baseline; `analyzer.EmotionAnalyzer` feeds its scores and signals to the learned
model as features and keeps its signals and evidence for explanations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.emotion.irony import IronyFinder
from services.emotion.repeats import RepeatContactFinder
from shared.events import NEGATIVE_EMOTIONS, EmotionAnalysis, EmotionLabel, Signal, SignalName

_log = logging.getLogger(__name__)

_L = EmotionLabel

LEXICON_PATH = Path(__file__).resolve().parent / "data" / "lexicon.yaml"
"""The curated phrases, negation words, signal patterns and acronyms (plain YAML to edit)."""

_MAX_WEIGHT = 3.0


class SignalPatterns(BaseModel):
    """A signal's regex fragments: strong ones give weight 1.0, weak ones 0.5."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strong: tuple[str, ...] = Field(min_length=1)
    weak: tuple[str, ...] = ()

    @field_validator("strong", "weak")
    @classmethod
    def _compiles(cls, fragments: tuple[str, ...]) -> tuple[str, ...]:
        for fragment in fragments:
            try:
                re.compile(_fragment_regex(fragment))
            except re.error as exc:
                raise ValueError(f"{fragment!r} does not compile: {exc}") from exc
        return fragments


class SignalBoost(BaseModel):
    """Evidence a signal lends to a label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: EmotionLabel
    weight: float = Field(gt=0, le=_MAX_WEIGHT)


class LexiconFile(BaseModel):
    """`data/lexicon.yaml`, validated: labels and signal names the contracts know, sane weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lexicons: dict[EmotionLabel, dict[str, Annotated[float, Field(gt=0, le=_MAX_WEIGHT)]]]
    negatable: frozenset[EmotionLabel]
    negators: frozenset[str]
    intensifiers: frozenset[str]
    signals: dict[SignalName, SignalPatterns]
    signal_boosts: dict[SignalName, SignalBoost]
    acronyms: frozenset[str]

    @field_validator("lexicons")
    @classmethod
    def _phrases_present(
        cls, value: dict[EmotionLabel, dict[str, float]]
    ) -> dict[EmotionLabel, dict[str, float]]:
        empty = [label.value for label, phrases in value.items() if not phrases]
        if empty:
            raise ValueError(f"labels without phrases: {', '.join(empty)}")
        return value


def load_lexicon(path: Path = LEXICON_PATH) -> LexiconFile:
    """Read and validate the lexicon file; a bad file stops start-up with the reason."""
    with path.open(encoding="utf-8") as handle:
        return LexiconFile.model_validate(yaml.safe_load(handle))


# Neutral always has this much evidence, so a label must earn more than that to win.
_NEUTRAL_PRIOR = 1.0
_QUESTION_WEIGHT = 0.3
_NEGATIVE_BOOST = 1.5
# Sarcasm ("thanks for nothing"): the praise counts for frustration, plus this much, and
# VADER's sentiment is turned round to at least this negativity.
_IRONY_EVIDENCE = 1.0
_IRONY_SENTIMENT = 0.3
_POSITIVE_BOOST = 1.0
_VADER_DEADZONE = 0.05  # VADER's own neutral band
# Order matters for ties: max() keeps the first, and neutral is the conservative answer.
_TIE_ORDER = (_L.NEUTRAL, _L.ANGER, _L.FRUSTRATION, _L.ANXIETY, _L.SADNESS, _L.CONFUSION, _L.JOY)
# The shared negative labels in a fixed order: a frozenset's order follows the process's hash
# seed, and the evidence sums below must not differ from run to run.
_NEGATIVE_LABELS = tuple(label for label in _TIE_ORDER if label in NEGATIVE_EMOTIONS)

_REPETITION_JACCARD = 0.8
# Short acknowledgements ("yes", "thank you") repeat naturally without frustration.
_REPETITION_MIN_TOKENS = 3
_MAX_EVIDENCE_CHARS = 120
_MAX_EXPLAINED_WORDS = 5

_APOSTROPHE = "['\u2019]?"
_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?")
_LETTER_RUN_RE = re.compile(r"[^\W\d_]{3,}")
_PUNCT_RUN_RE = re.compile(r"[!?]{2,}")
_NON_WORD_RE = re.compile(r"[^\w\s]+")
_KEY_SPACE_RE = re.compile(r"[\s-]+")


def _phrase_regex(phrase: str) -> str:
    """Turn a plain lexicon phrase into a regex fragment tolerant of how people type it."""
    parts: list[str] = []
    for char in phrase:
        if char == "'":
            parts.append(_APOSTROPHE)
        elif char == " ":
            parts.append(r"[\s-]+")
        else:
            parts.append(re.escape(char))
    return "".join(parts)


def _fragment_regex(fragment: str) -> str:
    """Apply the same apostrophe and whitespace tolerance to a hand-written regex fragment."""
    return fragment.replace("'", _APOSTROPHE).replace(" ", r"\s+")


def _bounded(fragments: Iterable[str]) -> re.Pattern[str]:
    """One case-insensitive alternation that only matches whole words."""
    # Longest first, so "still not" wins over "not" and "yet again" over "again".
    ordered = sorted(fragments, key=len, reverse=True)
    return re.compile(rf"(?<!\w)(?:{'|'.join(ordered)})(?!\w)", re.IGNORECASE)


def _phrase_key(text: str) -> str:
    """The lexicon key a matched span corresponds to, whatever its case or apostrophes."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    return _KEY_SPACE_RE.sub(" ", text).strip()


def _tokens(text: str) -> set[str]:
    """Word tokens after normalising case, apostrophes and punctuation."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    return set(_NON_WORD_RE.sub(" ", text).split())


def _dedupe(spans: Iterable[str]) -> list[str]:
    """Matched spans in first-seen order, once each regardless of case."""
    seen: dict[str, str] = {}
    for span in spans:
        seen.setdefault(_phrase_key(span), span)
    return list(seen.values())


def _clip(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= _MAX_EVIDENCE_CHARS:
        return text
    return text[: _MAX_EVIDENCE_CHARS - 1] + "\u2026"


# Loaded at import: a bad file stops the service at start-up, never mid-conversation.
_FILE = load_lexicon()
_LEXICONS: Mapping[EmotionLabel, Mapping[str, float]] = _FILE.lexicons
_NEGATABLE = _FILE.negatable
_NEGATORS = _FILE.negators
_INTENSIFIERS = _FILE.intensifiers
_SIGNAL_BOOSTS: Mapping[str, tuple[EmotionLabel, float]] = {
    name: (boost.label, boost.weight) for name, boost in _FILE.signal_boosts.items()
}
_ACRONYMS = _FILE.acronyms


class LexiconAnalyzer:
    """Scores how a customer seems to feel in one message, and says why.

    Lexicon hits and VADER sentiment become evidence per label, neutral starts with a fixed
    prior, and the evidence is normalised into scores. Build one instance and reuse it: the
    regexes and the VADER lexicon are loaded once, and `analyze` is safe to call concurrently.
    """

    MODEL_NAME = "lexicon-vader-v1"

    def __init__(
        self, repeats: RepeatContactFinder | None = None, irony: IronyFinder | None = None
    ) -> None:
        """Load VADER and compile every lexicon, signal and irony pattern."""
        self._vader = SentimentIntensityAnalyzer()
        self._repeats = repeats or RepeatContactFinder()
        self.irony = irony or IronyFinder()
        self._lexicons: dict[EmotionLabel, tuple[re.Pattern[str], dict[str, float]]] = {
            label: (
                _bounded(_phrase_regex(phrase) for phrase in weights),
                {_phrase_key(phrase): weight for phrase, weight in weights.items()},
            )
            for label, weights in _LEXICONS.items()
        }
        self._signals: list[tuple[SignalName, re.Pattern[str], re.Pattern[str] | None]] = [
            (
                name,
                _bounded(_fragment_regex(f) for f in spec.strong),
                _bounded(_fragment_regex(f) for f in spec.weak) if spec.weak else None,
            )
            for name, spec in _FILE.signals.items()
        ]

    def vader_words(self) -> list[str]:
        """Every word in VADER's sentiment lexicon."""
        return list(self._vader.lexicon)

    def analyze(self, text: str, previous_customer_texts: Sequence[str] = ()) -> EmotionAnalysis:
        """Analyze one customer message; earlier customer messages reveal repetition.

        Never raises: an empty message is neutral, and an internal failure returns a neutral
        stand-in marked `degraded` so the pipeline keeps moving.
        """
        try:
            if not text or not text.strip():
                return self._neutral("neutral: empty message", degraded=False)
            return self._analyze(text, previous_customer_texts)
        except Exception:
            _log.exception("emotion analysis failed; returning a neutral stand-in")
            return self._neutral("neutral: analysis failed, neutral stand-in", degraded=True)

    def _analyze(self, text: str, previous_texts: Sequence[str]) -> EmotionAnalysis:
        compound = max(-1.0, min(1.0, float(self._vader.polarity_scores(text)["compound"])))
        irony = self.irony.find(text)
        if irony:
            compound = min(-abs(compound), -_IRONY_SENTIMENT)
        signals = self._signals_in(text, previous_texts)

        evidence = dict.fromkeys(EmotionLabel, 0.0)
        evidence[_L.NEUTRAL] = _NEUTRAL_PRIOR
        reasons: dict[EmotionLabel, list[str]] = {label: [] for label in EmotionLabel}

        for label, hits in self._lexical_hits(text).items():
            for span, weight in hits:
                evidence[label] += weight
                reasons[label].append(f"'{span}'")
        if irony:
            # Praise said in irony is the complaint: its weight goes to frustration.
            evidence[_L.FRUSTRATION] += evidence[_L.JOY] + _IRONY_EVIDENCE
            evidence[_L.JOY] = 0.0
            reasons[_L.JOY].clear()
            reasons[_L.FRUSTRATION].extend(f"irony '{cue}'" for cue in irony)

        questions = text.count("?")
        if questions:
            evidence[_L.CONFUSION] += _QUESTION_WEIGHT * min(questions, 3)
            reasons[_L.CONFUSION].append("'?'")

        for signal in signals:
            if signal.name in _SIGNAL_BOOSTS:
                label, boost = _SIGNAL_BOOSTS[signal.name]
                evidence[label] += boost * signal.weight
                reasons[label].append(signal.name)

        self._apply_sentiment(compound, evidence, reasons)

        total = sum(evidence.values())
        scores = {label: evidence[label] / total for label in EmotionLabel}
        label = max(_TIE_ORDER, key=lambda candidate: scores[candidate])

        return EmotionAnalysis(
            label=label,
            scores=scores,
            sentiment=compound,
            intensity=self._intensity(text, compound, scores, label),
            signals=signals,
            explanation=self._explain(label, reasons[label], signals, compound),
            model=self.MODEL_NAME,
            degraded=False,
        )

    def _lexical_hits(self, text: str) -> dict[EmotionLabel, list[tuple[str, float]]]:
        """Each distinct lexicon phrase found in the text, as typed, with its weight."""
        hits: dict[EmotionLabel, list[tuple[str, float]]] = {}
        for label, (pattern, weights) in self._lexicons.items():
            found: dict[str, tuple[str, float]] = {}
            for match in pattern.finditer(text):
                key = _phrase_key(match.group())
                if key in found or (label in _NEGATABLE and _negated(text, match.start())):
                    continue
                found[key] = (match.group(), weights.get(key, 1.0))
            if found:
                hits[label] = list(found.values())
        return hits

    @staticmethod
    def _apply_sentiment(
        compound: float,
        evidence: dict[EmotionLabel, float],
        reasons: dict[EmotionLabel, list[str]],
    ) -> None:
        """Let VADER's compound add evidence to the labels that share its polarity."""
        if compound >= _VADER_DEADZONE:
            evidence[_L.JOY] += _POSITIVE_BOOST * compound
            reasons[_L.JOY].append("positive sentiment")
            return
        if compound > -_VADER_DEADZONE:
            return
        boost = _NEGATIVE_BOOST * -compound
        negative = {label: evidence[label] for label in _NEGATIVE_LABELS}
        negative_total = sum(negative.values())
        if negative_total == 0:
            # Negativity with no specific cue ("this is the worst") is most often plain
            # dissatisfaction; only strong negativity outweighs neutral's prior this way.
            evidence[_L.FRUSTRATION] += boost
            reasons[_L.FRUSTRATION].append("negative sentiment")
            return
        # Otherwise sharpen whichever negative emotion the words already point at.
        for label, amount in negative.items():
            if amount:
                evidence[label] += boost * amount / negative_total
                reasons[label].append("negative sentiment")

    def _signals_in(self, text: str, previous_texts: Sequence[str]) -> list[Signal]:
        """Every signal the message shows, once each, with the words that show it."""
        signals: list[Signal] = []
        shouting = _shouting(text)
        if shouting:
            signals.append(shouting)
        bursts = _dedupe(run for run in _PUNCT_RUN_RE.findall(text) if run != "??")
        if bursts:
            signals.append(Signal(name="punctuation_burst", evidence=_clip(", ".join(bursts))))
        for name, strong, weak in self._signals:
            strong_spans = _dedupe(m.group() for m in strong.finditer(text))
            weak_spans = _dedupe(m.group() for m in weak.finditer(text)) if weak else []
            if strong_spans or weak_spans:
                signals.append(
                    Signal(
                        name=name,
                        evidence=_clip(", ".join(strong_spans + weak_spans)),
                        weight=1.0 if strong_spans else 0.5,
                    )
                )
        repetition = _repetition(text, previous_texts)
        if repetition:
            signals.append(repetition)
        repeat_contact = self._repeats.find(text)
        if repeat_contact:
            signals.append(repeat_contact)
        return signals

    @staticmethod
    def _intensity(
        text: str, compound: float, scores: Mapping[EmotionLabel, float], label: EmotionLabel
    ) -> float:
        """How strongly it is felt: sentiment strength, capitals, '!' and label confidence."""
        letters = [char for char in text if char.isalpha()]
        caps = sum(char.isupper() for char in letters) / len(letters) if len(letters) >= 8 else 0.0
        exclamations = min(text.count("!"), 3) / 3
        # Neutral is the absence of emotion, so its confidence adds no intensity.
        strength = 0.0 if label is _L.NEUTRAL else scores[label]
        value = 0.4 * abs(compound) + 0.2 * caps + 0.15 * exclamations + 0.25 * strength
        return max(0.0, min(1.0, value))

    @staticmethod
    def _explain(
        label: EmotionLabel, reasons: Sequence[str], signals: Sequence[Signal], compound: float
    ) -> str:
        """One short sentence naming the words and signals behind the result."""
        if label is _L.NEUTRAL:
            head = "neutral, no strong emotional cues"
        else:
            shown = list(dict.fromkeys(reasons))[:_MAX_EXPLAINED_WORDS]
            head = f"{label.value} from {', '.join(shown)}"
        parts = [head]
        if signals:
            parts.append("signals: " + ", ".join(signal.name for signal in signals))
        parts.append(f"sentiment {compound:.2f}")
        return "; ".join(parts)

    def _neutral(self, explanation: str, *, degraded: bool) -> EmotionAnalysis:
        scores = {label: 1.0 if label is _L.NEUTRAL else 0.0 for label in EmotionLabel}
        return EmotionAnalysis(
            label=_L.NEUTRAL,
            scores=scores,
            sentiment=0.0,
            intensity=0.0,
            signals=[],
            explanation=explanation,
            model=self.MODEL_NAME,
            degraded=degraded,
        )


def _negated(text: str, start: int) -> bool:
    """Whether the words just before `start` negate the match ("not great", "not too sad")."""
    before = _WORD_RE.findall(text[max(0, start - 40) : start].lower())
    words = [word.replace("'", "").replace("\u2019", "") for word in before]
    while words and words[-1] in _INTENSIFIERS:
        words.pop()
    return bool(words) and words[-1] in _NEGATORS


def _shouting(text: str) -> Signal | None:
    """Mostly-capitals messages, or capitalised words that are not known acronyms."""
    letters = [char for char in text if char.isalpha()]
    if not letters:
        return None
    ratio = sum(char.isupper() for char in letters) / len(letters)
    caps_words = _dedupe(
        word for word in _LETTER_RUN_RE.findall(text) if word.isupper() and word not in _ACRONYMS
    )
    if (len(letters) >= 8 and ratio >= 0.6) or len(caps_words) >= 2:
        weight = 1.0
    elif any(len(word) >= 6 for word in caps_words):
        # One long capitalised word ("UNACCEPTABLE") is emphasis rather than a shouted message.
        weight = 0.5
    else:
        return None
    return Signal(name="shouting", evidence=_clip(" ".join(caps_words) or text), weight=weight)


def _repetition(text: str, previous_texts: Sequence[str]) -> Signal | None:
    """The earlier message this one nearly repeats (token Jaccard >= 0.8), if any."""
    tokens = _tokens(text)
    if len(tokens) < _REPETITION_MIN_TOKENS:
        return None
    for previous in reversed(previous_texts):
        earlier = _tokens(previous)
        if earlier and len(tokens & earlier) / len(tokens | earlier) >= _REPETITION_JACCARD:
            return Signal(name="repetition", evidence=_clip(text))
    return None
