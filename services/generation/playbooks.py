"""Scenario playbooks: the strategy that works for a recognised customer situation.

`playbooks.yaml` lists the scenarios (refund denied, unavailable product, delivery delay,
billing dispute, bereavement, fraud fear...). Selection is by cues in the message, weighted
by the emotion the scenario usually comes with: deterministic, explainable, and a few
microseconds a turn, so it costs nothing on time to first token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.events import EmotionLabel
from shared.linear_re import PatternSet, compile_linear

EMOTION_WEIGHT = 0.5
"""What a matching emotion adds: less than one cue, so it only breaks ties."""
HISTORY_WEIGHT = 0.5
"""A cue in the customer's previous message counts half: the scenario usually continues."""


class Unmet(BaseModel):
    """When a scenario's exact request cannot be met, and what shows a reply knows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: list[str] = Field(min_length=1)
    """Cues in the customer's message that mean the exact request cannot be met."""
    alternatives: list[str] = Field(min_length=1)
    """Cues that show a reply offers the closest alternative instead."""
    request: list[str] = []
    """Words naming what cannot be had ("refund"); empty: the `when` cues found."""


class Playbook(BaseModel):
    """One scenario and how to handle it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    title: str
    cues: list[str] = Field(min_length=1)
    emotions: list[EmotionLabel] = []
    strategy: str
    avoid: list[str] = []
    topics: str = ""
    """Words added to the knowledge query when this playbook is chosen."""
    unmet: Unmet | None = None
    """Set when this scenario's exact request often cannot be met (the co-creation check)."""
    acknowledgement: str = ""
    """The opening a composed reply uses in this scenario (`{name}`: ", Sam" or nothing);
    empty: the emotion strategy's."""
    next_step: str = ""
    """What a composed reply offers last: the alternative or the next step, in words that
    state no fact of their own (facts come from the knowledge base)."""
    sincere_only: bool = False
    """Not chosen when the message reads as sarcasm ("Oh brilliant... amazing service")."""


class PlaybookFile(BaseModel):
    """The YAML file's shape."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    playbooks: list[Playbook]


def cue_pattern(cue: str) -> str:
    """A whole-word regex for a cue; hyphens and spaces interchangeable, `*` any ending."""
    words = re.split(r"[\s-]+", cue.strip().lower())
    parts = []
    for word in words:
        wildcard = word.endswith("*")
        # `?` in a cue stands for any one letter (unauthori?ed: -ised and -ized).
        body = re.escape(word.rstrip("*")).replace(r"\?", r"\w")
        parts.append(body + (r"\w*" if wildcard else ""))
    return r"\b" + r"[\s-]+".join(parts) + r"\b"


@dataclass(frozen=True)
class PlaybookMatch:
    """The chosen playbook and why."""

    playbook: Playbook
    score: float
    cues: tuple[str, ...]
    unmet_cues: tuple[str, ...] = ()
    """The `unmet.when` cues in the message: non-empty when the exact request cannot be met."""

    @property
    def unmet(self) -> bool:
        """Whether the playbook says the exact request cannot be met."""
        return bool(self.unmet_cues)


class PlaybookLibrary:
    """All playbooks, with a compiled matcher per playbook."""

    def __init__(self, playbooks: Sequence[Playbook]) -> None:
        ids = [p.id for p in playbooks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate playbook ids in {ids}")
        self.playbooks = list(playbooks)
        self._matchers = [
            (p, [(cue, compile_linear(cue_pattern(cue), ignore_case=True)) for cue in p.cues])
            for p in playbooks
        ]
        # Customer text meets every cue: one linear RE2 pass finds all that occur.
        self._cues = PatternSet(rx for _, cues in self._matchers for _, rx in cues)
        self._unmet = {
            p.id: [
                (cue, compile_linear(cue_pattern(cue), ignore_case=True)) for cue in p.unmet.when
            ]
            for p in playbooks
            if p.unmet is not None
        }

    @classmethod
    def load(cls, path: Path) -> PlaybookLibrary:
        """Read and validate a playbook file; a bad file fails start-up, loudly."""
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls(PlaybookFile.model_validate(raw).playbooks)

    def get(self, playbook_id: str) -> Playbook | None:
        """A playbook by id."""
        return next((p for p in self.playbooks if p.id == playbook_id), None)

    def select(
        self,
        text: str,
        emotion: EmotionLabel,
        previous: str | None = None,
        *,
        sarcastic: bool = False,
    ) -> PlaybookMatch | None:
        """The best playbook for this message, or None when no cue matches at all.

        `sarcastic`: the message reads as sarcasm, so its praise words are a complaint and
        `sincere_only` playbooks (celebration) are not chosen.
        """
        best: PlaybookMatch | None = None
        hits = self._cues.matching(text)
        earlier = self._cues.matching(previous) if previous else frozenset()
        for playbook, cues in self._matchers:
            if sarcastic and playbook.sincere_only:
                continue
            found = [cue for cue, rx in cues if rx in hits]
            score = float(len(found))
            if previous:
                score += HISTORY_WEIGHT * sum(1 for _, rx in cues if rx in earlier)
            if score == 0:
                continue
            if emotion in playbook.emotions:
                score += EMOTION_WEIGHT
            # Ties go to the playbook listed first: the file's order is its priority.
            if best is None or score > best.score:
                unmet = tuple(c for c, rx in self._unmet.get(playbook.id, []) if rx.search(text))
                best = PlaybookMatch(playbook, score, tuple(found), unmet)
        return best
