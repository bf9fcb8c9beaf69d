"""How a reply sounds: the tone half of the care check.

The check reads a reply through a small `ToneAnalyzer` protocol (text in; emotion, sentiment
and named signals out), so the platform's shared emotion analyzer can stand in for the
implementation here without the check changing. `CueToneAnalyzer` is what runs today: VADER
for sentiment (already a dependency of the emotion service) plus the hand-written cue lists
in `tone_cues.yaml` for the four unkind tones a reply must never take (hostile, blaming,
sarcastic, dismissive). Cues rather than a classifier because a reply's unkindness is
phrased in a small number of stock ways, a cue names the words it fired on (the reviewer sees
why), and a miss is fixed by adding a line, not retraining.

The same module answers two questions about the customer's side: does their message read as
sarcasm ("Oh brilliant... truly amazing service" is a complaint, not thanks), and does a
reply's sentence acknowledge a feeling.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.generation.playbooks import cue_pattern

CUES_PATH = Path(__file__).resolve().parent / "tone_cues.yaml"
UNKIND_TONES = ("hostile", "blaming", "sarcastic", "dismissive")

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
# Praise trailing off ("amazing...", "brilliant…") reads as sarcasm.
_TRAILING_PRAISE = r"\b(?:{praise})\s*(?:\.\s*){{2,}}|\b(?:{praise})\s*\u2026"


@dataclass(frozen=True)
class ToneReading:
    """What a tone analyzer says about a text."""

    emotion: str
    """The feeling the text expresses (the platform's emotion labels, or `neutral`)."""
    sentiment: float
    """-1 (negative) to 1 (positive)."""
    signals: tuple[str, ...] = ()
    """Named cues found: for a reply, the unkind tones (`hostile`, `blaming`, `sarcastic`,
    `dismissive`)."""
    evidence: dict[str, str] = field(default_factory=dict)
    """For each signal, the words that showed it."""


class ToneAnalyzer(Protocol):
    """Reads a text's emotion, sentiment and signals; the care check needs nothing else."""

    def analyze(self, text: str) -> ToneReading:
        """The reading for one text."""
        ...


def _normal(text: str) -> str:
    return text.translate(_APOSTROPHES)


def _compile(cues: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(cue_pattern(c) for c in cues), re.IGNORECASE)


@dataclass(frozen=True)
class ToneCues:
    """The cue lists of `tone_cues.yaml`, compiled."""

    unkind: dict[str, re.Pattern[str]]
    sarcasm: re.Pattern[str]
    acknowledgement: re.Pattern[str]

    @classmethod
    def load(cls, path: Path = CUES_PATH) -> ToneCues:
        """Read and compile the cue file; a malformed file fails start-up."""
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping")
        unkind = raw.get("unkind") or {}
        missing = [t for t in UNKIND_TONES if not unkind.get(t)]
        if missing:
            raise ValueError(f"{path}: no cues for {missing}")
        sarcasm = raw["sarcasm"]
        praise = "|".join(cue_pattern(p)[2:-2] for p in sarcasm["praise"])
        opener = "|".join(cue_pattern(i)[2:-2] for i in sarcasm["interjections"])
        patterns = [
            rf"(?:^|[.!?]\s*)(?:{opener})[\s,!.]+(?:{praise})\b",
            _TRAILING_PRAISE.format(praise=praise),
            *(cue_pattern(p) for p in sarcasm["phrases"]),
        ]
        return cls(
            unkind={tone: _compile(unkind[tone]) for tone in UNKIND_TONES},
            sarcasm=re.compile("|".join(patterns), re.IGNORECASE),
            acknowledgement=_compile(raw["acknowledgement"]),
        )

    def unkind_in(self, text: str) -> dict[str, str]:
        """Each unkind tone the text takes, with the words that show it."""
        text = _normal(text)
        found: dict[str, str] = {}
        for tone, rx in self.unkind.items():
            m = rx.search(text)
            if m:
                found[tone] = m.group(0)
        return found

    def is_sarcastic(self, text: str) -> str | None:
        """The words that make a customer's message read as sarcasm, or None."""
        m = self.sarcasm.search(_normal(text))
        return m.group(0).strip(" .!?") if m else None

    def acknowledges(self, sentence: str) -> bool:
        """Whether a sentence acknowledges how someone feels."""
        return self.acknowledgement.search(_normal(sentence)) is not None


class CueToneAnalyzer:
    """VADER sentiment plus the unkind-tone cues: the tone analyzer that runs offline today."""

    def __init__(self, cues: ToneCues | None = None) -> None:
        self.cues = cues or ToneCues.load()
        self._vader = SentimentIntensityAnalyzer()

    def analyze(self, text: str) -> ToneReading:
        """The reply's sentiment and the unkind tones it takes."""
        sentiment = float(self._vader.polarity_scores(text)["compound"])
        # Only the reply cues: the customer-side sarcasm reading would take a reply's sincere
        # "Amazing... congratulations!" for a jibe.
        found = self.cues.unkind_in(text)
        if "hostile" in found:
            emotion = "anger"
        elif sentiment <= -0.5:
            emotion = "frustration"
        elif sentiment >= 0.5:
            emotion = "joy"
        else:
            emotion = "neutral"
        return ToneReading(emotion, sentiment, tuple(found), found)
