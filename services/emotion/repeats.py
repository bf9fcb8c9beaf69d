"""Repeat contact: a customer saying they are asking again, or chasing an answer.

The cues are data (`data/repeat_contact.yaml`), written as RE2 patterns so that whatever a
customer types, finding them takes time linear in the message (`shared.linear_re`). A strong
cue ("third time I'm asking", "I already told you", "still no answer") gives the
`repeat_contact` signal weight 1.0; a chasing cue ("any news?") weight 0.5, which escalation
counts only when an issue from an earlier conversation is still open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.events import Signal
from shared.linear_re import LinearPattern, compile_linear

DEFAULT_CUES_PATH = Path(__file__).parent / "data" / "repeat_contact.yaml"

STRONG_WEIGHT = 1.0
FOLLOW_UP_WEIGHT = 0.5
_MAX_EVIDENCE_CHARS = 120

Cue = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=1000)]


class RepeatCues(BaseModel):
    """The cue file: strong cues and follow-up (chasing) cues; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strong: Annotated[list[Cue], Field(min_length=1)]
    follow_up: list[Cue] = []


def _fragment(cue: str) -> str:
    """A cue as written in the file, tolerant of how people type it (RE2 syntax)."""
    return cue.replace("'", "['\u2019]?").replace(" ", r"\s+")


def _alternation(cues: list[str]) -> LinearPattern | None:
    if not cues:
        return None
    ordered = sorted(cues, key=len, reverse=True)
    return compile_linear(
        r"\b(?:" + "|".join(f"(?:{_fragment(c)})" for c in ordered) + r")\b", ignore_case=True
    )


def load_cues(path: Path = DEFAULT_CUES_PATH) -> RepeatCues:
    """Read and validate a cue file; ValueError naming the file when it is unusable."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with `strong` and `follow_up` lists")
    return RepeatCues.model_validate(data)


class RepeatContactFinder:
    """Finds repeat-contact cues in one customer message; build once, share freely."""

    def __init__(self, cues: RepeatCues | None = None) -> None:
        """Compile the cues (the shipped file by default); ValueError if one is not RE2."""
        cues = cues or load_cues()
        strong = _alternation(cues.strong)
        assert strong is not None  # the model requires at least one strong cue
        self._strong = strong
        self._follow_up = _alternation(cues.follow_up)

    def find(self, text: str) -> Signal | None:
        """The `repeat_contact` signal with the words that show it, or None."""
        strong = _spans(self._strong, text)
        follow_up = _spans(self._follow_up, text) if self._follow_up else []
        if not strong and not follow_up:
            return None
        evidence = ", ".join(dict.fromkeys(strong + follow_up))
        if len(evidence) > _MAX_EVIDENCE_CHARS:
            evidence = evidence[: _MAX_EVIDENCE_CHARS - 1] + "\u2026"
        return Signal(
            name="repeat_contact",
            evidence=evidence,
            weight=STRONG_WEIGHT if strong else FOLLOW_UP_WEIGHT,
        )


def _spans(pattern: LinearPattern, text: str) -> list[str]:
    # A message has few cues; the cap bounds the work of a message made of nothing else.
    spans: list[str] = []
    for match in pattern.finditer(text):
        spans.append(" ".join(match.group().split()))
        if len(spans) >= 4:
            break
    return spans
