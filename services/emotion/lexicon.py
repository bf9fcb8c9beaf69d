"""Lexical evidence: curated customer-service lexicons, VADER sentiment and named signals.

Fully explainable, so every cue can be traced to the words that caused it. On its own it is
the lexicon baseline; `analyzer.EmotionAnalyzer` feeds its scores and signals to the learned
model as features and keeps its signals and evidence for explanations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.emotion.repeats import RepeatContactFinder
from shared.events import EmotionAnalysis, EmotionLabel, Signal, SignalName

_log = logging.getLogger(__name__)

_L = EmotionLabel

# Curated customer-service phrases per label, with how strongly each one points at the label.
# Plain text on purpose, so non-engineers can edit them: matching is case-insensitive, on word
# boundaries, and tolerant of missing or curly (U+2019) apostrophes ("dont") and of hyphens.
_LEXICONS: Mapping[EmotionLabel, Mapping[str, float]] = {
    _L.ANGER: {
        "furious": 1.5,
        "livid": 1.5,
        "outraged": 1.5,
        "unacceptable": 1.2,
        "not acceptable": 1.2,
        "ridiculous": 1.0,
        "outrageous": 1.2,
        "disgusted": 1.2,
        "disgusting": 1.2,
        "appalling": 1.2,
        "appalled": 1.2,
        "angry": 1.2,
        "how dare": 1.5,
        "pathetic": 1.0,
        "absurd": 1.0,
        "insulting": 1.0,
        "incompetent": 1.0,
        "rip off": 1.0,
        "scandalous": 1.0,
        "thanks for nothing": 1.5,
        "worst": 0.8,
        "useless": 0.8,
        "terrible": 0.7,
        "awful": 0.7,
        "a joke": 0.8,
    },
    _L.FRUSTRATION: {
        "again": 0.6,
        "yet again": 1.0,
        "again and again": 1.2,
        "over and over": 1.2,
        "still not": 1.2,
        "still no": 1.0,
        "still waiting": 1.2,
        "still haven't": 1.2,
        "still hasn't": 1.2,
        "still doesn't": 1.2,
        "third time": 1.2,
        "two times": 1.0,
        "three times": 1.0,
        "four times": 1.0,
        "several times": 1.0,
        "many times": 1.0,
        "multiple times": 1.0,
        "how many times": 1.2,
        "every time": 0.8,
        "fed up": 1.5,
        "sick of": 1.2,
        "tired of": 1.2,
        "waste of time": 1.2,
        "nobody": 0.8,
        "no one": 0.8,
        "keeps": 0.8,
        "kept": 0.6,
        "frustrated": 1.5,
        "frustrating": 1.5,
        "annoyed": 1.2,
        "annoying": 1.2,
        "not happy": 1.0,
        "on hold": 0.8,
        "doesn't work": 0.8,
        "not working": 0.8,
        "never works": 1.0,
    },
    _L.ANXIETY: {
        "worried": 1.5,
        "worrying": 1.2,
        "scared": 1.5,
        "afraid": 1.2,
        "terrified": 1.5,
        "nervous": 1.2,
        "anxious": 1.5,
        "panic": 1.2,
        "panicking": 1.5,
        "stressed": 1.0,
        "desperate": 1.2,
        "concerned": 0.8,
        "what if": 1.0,
        "can't afford": 1.2,
        "urgent": 0.7,
        "urgently": 0.7,
        "asap": 0.7,
        "emergency": 1.0,
        "fraud": 1.2,
        "fraudulent": 1.2,
        "scam": 1.0,
        "scammed": 1.2,
        "hacked": 1.2,
        "stolen": 1.0,
        "unauthorised": 1.0,
        "unauthorized": 1.0,
    },
    _L.SADNESS: {
        "passed away": 2.0,
        "died": 1.5,
        "funeral": 1.5,
        "bereavement": 1.5,
        "lost my": 1.0,
        "heartbroken": 1.5,
        "devastated": 1.5,
        "grieving": 1.5,
        "sad": 1.2,
        "unhappy": 0.8,
        "upset": 1.0,
        "disappointed": 1.0,
        "disappointing": 1.0,
        "let down": 1.0,
        "gutted": 1.0,
        "depressed": 1.2,
        "lonely": 1.2,
        "crying": 1.2,
    },
    _L.CONFUSION: {
        "don't understand": 1.5,
        "doesn't make sense": 1.5,
        "makes no sense": 1.5,
        "confused": 1.5,
        "confusing": 1.2,
        "unclear": 1.0,
        "not sure": 0.8,
        "no idea": 0.8,
        "i'm lost": 1.2,
        "how do i": 0.8,
        "what does": 0.8,
        "what do you mean": 1.2,
        "which one": 0.8,
        "don't get it": 1.2,
    },
    _L.JOY: {
        "thank you": 1.0,
        # VADER reads the "can't" as negation; the phrase is emphatic gratitude.
        "can't thank you enough": 2.0,
        "thanks": 1.0,
        "great": 1.0,
        "love": 1.0,
        "perfect": 1.0,
        "relieved": 1.2,
        "awesome": 1.2,
        "amazing": 1.2,
        "wonderful": 1.2,
        "brilliant": 1.2,
        "fantastic": 1.2,
        "excellent": 1.0,
        "happy": 1.0,
        "glad": 1.0,
        "delighted": 1.2,
        "lovely": 1.0,
        "appreciate": 1.0,
        "helpful": 0.8,
    },
}

# "not great" and "not worried" mean the opposite of their keyword; frustration and confusion
# are left out because their phrases carry the negation themselves ("still not", "not sure").
_NEGATABLE = frozenset({_L.ANGER, _L.ANXIETY, _L.SADNESS, _L.JOY})
_NEGATORS = frozenset(
    {"not", "no", "never", "dont", "didnt", "doesnt", "isnt", "wasnt", "arent", "werent", "hardly"}
)
# Skipped when looking for a negator, so "not very happy" still reads as negated.
_INTENSIFIERS = frozenset({"very", "too", "so", "really", "that", "all", "particularly", "overly"})


@dataclass(frozen=True)
class _SignalSpec:
    """A signal's regex fragments: strong ones give weight 1.0, weak ones 0.5."""

    name: SignalName
    strong: tuple[str, ...]
    weak: tuple[str, ...] = ()


# Regex fragments (not plain phrases) because several signals need alternations or lookaheads;
# a "'" is made optional and curly-tolerant and a space matches any whitespace when compiled.
_SIGNAL_SPECS: tuple[_SignalSpec, ...] = (
    _SignalSpec(
        "human_request",
        strong=(
            r"(?:talk|speak|chat) (?:to|with) (?:a |an |the |your )?(?:real |actual |live )?"
            r"(?:human|person|agent|manager|supervisor|representative|operator)",
            r"(?:let me |can i |i want to |i need to )(?:talk|speak) (?:to|with) "
            r"(?:someone|somebody|a human|a person)",
            r"real (?:person|human)",
            r"actual (?:person|human)",
            r"live agent",
            r"(?:human|agent|person|operator) please",
            r"(?:get|put|transfer|connect) me (?:to |through to |with )?(?:a |an )?"
            r"(?:human|person|agent|manager|representative|operator)",
            r"(?:i want|i need|give me) (?:a |an )?(?:human|agent|real person|manager)",
            r"representative",
        ),
    ),
    _SignalSpec(
        "urgency",
        strong=(r"urgent(?:ly)?", r"asap", r"immediately", r"right now", r"emergency"),
        # "today" is often just a date ("I ordered today"), so it counts for less.
        weak=(r"today",),
    ),
    _SignalSpec(
        "churn_threat",
        strong=(
            r"cancel (?:my|our) (?:account|subscription|contract|membership|service)",
            r"close (?:my|our) account",
            r"take (?:my|our) business elsewhere",
            # Switching plans inside the company is not churn; switching providers is.
            r"switch(?:ing)? (?:over )?to (?!(?:\w+ ){0,2}(?:plan|tariff|package|bundle|option|"
            r"setting|mode|version|card|account)\b)\w+",
        ),
        # "leaving" is also "leaving the house", so it counts for less.
        weak=(r"leaving",),
    ),
    _SignalSpec(
        "legal_threat",
        strong=(
            r"lawyers?",
            r"solicitors?",
            r"attorneys?",
            r"sue",
            r"suing",
            r"legal action",
            r"ombudsman",
            r"small claims",
            r"take you to court",
        ),
    ),
    _SignalSpec(
        "profanity",
        strong=(
            r"fuck\w*",
            r"shit\w*",
            r"bullshit",
            r"crap",
            r"damn\w*",
            r"goddamn",
            r"bastards?",
            r"assholes?",
            r"arseholes?",
            r"bollocks",
            r"pissed",
            r"wtf",
            r"bitch\w*",
        ),
    ),
    _SignalSpec(
        "vulnerability",
        strong=(
            r"passed away",
            r"died",
            r"funeral",
            r"bereave\w*",
            r"hospital\w*",
            r"cancer",
            r"terminal(?:ly)? ill",
            # "sick of" is frustration, not illness.
            r"sick(?! of| and tired)",
            r"can't afford",
            r"lost my job",
            r"debts?",
            r"fraud\w*",
            r"scam\w*",
            r"stolen",
        ),
    ),
)

# Extra evidence that signals lend to a label: asking again is the clearest frustration cue.
_SIGNAL_BOOSTS: Mapping[str, tuple[EmotionLabel, float]] = {
    "repetition": (_L.FRUSTRATION, 1.2),
    "churn_threat": (_L.FRUSTRATION, 0.5),
    "legal_threat": (_L.ANGER, 0.5),
    "profanity": (_L.ANGER, 0.5),
}

# Common customer-service acronyms are capitals without shouting ("my ATM PIN").
_ACRONYMS = frozenset(
    {"ATM", "PIN", "USB", "SMS", "API", "URL", "FAQ", "VAT", "IBAN", "BIC", "PDF", "CEO", "ETA",
     "USA", "GBP", "USD", "EUR", "SIM", "APP", "NHS", "IRS", "HMRC", "ISP", "VPN", "WIFI", "DNS"}
)  # fmt: skip

# Neutral always has this much evidence, so a label must earn more than that to win.
_NEUTRAL_PRIOR = 1.0
_QUESTION_WEIGHT = 0.3
_NEGATIVE_BOOST = 1.5
_POSITIVE_BOOST = 1.0
_VADER_DEADZONE = 0.05  # VADER's own neutral band
_NEGATIVE_LABELS = (_L.ANGER, _L.FRUSTRATION, _L.ANXIETY, _L.SADNESS)
# Order matters for ties: max() keeps the first, and neutral is the conservative answer.
_TIE_ORDER = (_L.NEUTRAL, _L.ANGER, _L.FRUSTRATION, _L.ANXIETY, _L.SADNESS, _L.CONFUSION, _L.JOY)

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


class LexiconAnalyzer:
    """Scores how a customer seems to feel in one message, and says why.

    Lexicon hits and VADER sentiment become evidence per label, neutral starts with a fixed
    prior, and the evidence is normalised into scores. Build one instance and reuse it: the
    regexes and the VADER lexicon are loaded once, and `analyze` is safe to call concurrently.
    """

    MODEL_NAME = "lexicon-vader-v1"

    def __init__(self, repeats: RepeatContactFinder | None = None) -> None:
        """Load VADER and compile every lexicon and signal pattern."""
        self._vader = SentimentIntensityAnalyzer()
        self._repeats = repeats or RepeatContactFinder()
        self._lexicons: dict[EmotionLabel, tuple[re.Pattern[str], dict[str, float]]] = {
            label: (
                _bounded(_phrase_regex(phrase) for phrase in weights),
                {_phrase_key(phrase): weight for phrase, weight in weights.items()},
            )
            for label, weights in _LEXICONS.items()
        }
        self._signals: list[tuple[SignalName, re.Pattern[str], re.Pattern[str] | None]] = [
            (
                spec.name,
                _bounded(_fragment_regex(f) for f in spec.strong),
                _bounded(_fragment_regex(f) for f in spec.weak) if spec.weak else None,
            )
            for spec in _SIGNAL_SPECS
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
        signals = self._signals_in(text, previous_texts)

        evidence = dict.fromkeys(EmotionLabel, 0.0)
        evidence[_L.NEUTRAL] = _NEUTRAL_PRIOR
        reasons: dict[EmotionLabel, list[str]] = {label: [] for label in EmotionLabel}

        for label, hits in self._lexical_hits(text).items():
            for span, weight in hits:
                evidence[label] += weight
                reasons[label].append(f"'{span}'")

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
