"""Sarcasm and irony: praise that means the opposite ("thanks for nothing", "great, just great").

Read literally, "Oh brilliant... truly amazing service" is joy; a customer who writes it is
not pleased. The cues are data (`data/irony.yaml`), RE2 patterns (`shared.linear_re`), so
finding them takes time linear in the message whatever a customer types. A cue found is
evidence, not a verdict: the lexicon counts the message's praise as frustration, and the
analyzer moves the classifier's joy to the negative labels and names the cue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.linear_re import LinearPattern, compile_linear

DEFAULT_IRONY_PATH = Path(__file__).parent / "data" / "irony.yaml"

Cue = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=1000)]


class IronyCues(BaseModel):
    """The cue file; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cues: Annotated[list[Cue], Field(min_length=1)]


def load_irony(path: Path = DEFAULT_IRONY_PATH) -> IronyCues:
    """Read and validate a cue file; ValueError naming the file when it is unusable."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with a `cues` list")
    return IronyCues.model_validate(data)


def _fragment(cue: str) -> str:
    return cue.replace("'", "['\u2019]?").replace(" ", r"\s+")


class IronyFinder:
    """Finds sarcasm and irony cues in a message; build once, share freely."""

    def __init__(self, cues: IronyCues | None = None) -> None:
        """Compile the cues (the shipped file by default); ValueError if one is not RE2."""
        cues = cues or load_irony()
        ordered = sorted(cues.cues, key=len, reverse=True)
        # Whole words without look-around: a cue must sit between non-word characters or the
        # ends of the text ("/s" starts with one, so `\b` would not do).
        self._pattern: LinearPattern = compile_linear(
            "(?:^|[^\\w'\u2019])((?:"
            + "|".join(f"(?:{_fragment(c)})" for c in ordered)
            + r"))(?:[^\w]|$)",
            ignore_case=True,
        )

    def find(self, text: str) -> list[str]:
        """The cues in the text as written (at most three), or an empty list."""
        spans: list[str] = []
        for match in self._pattern.finditer(text):
            span = " ".join(match.group(1).split())
            if span not in spans:
                spans.append(span)
            if len(spans) >= 3:
                break
        return spans
