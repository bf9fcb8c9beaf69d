"""The labelled customer-service messages the emotion model learns from and is tested on.

See `data/DATASHEET.md` for how they were written, the label guide and the split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.events import EmotionLabel

DATA_DIR = Path(__file__).parent / "data"
HELDOUT_FILE = "heldout.jsonl"
TEST_PERCENT = 20
"""Share of the written examples in the test split, chosen by `split_of` when it was made."""

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Example:
    """One labelled message."""

    text: str
    label: EmotionLabel
    domain: str = ""
    style: str = ""


def read_jsonl(path: Path) -> list[Example]:
    """Examples from a JSON Lines file of {"text", "label", ...} objects."""
    examples = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                examples.append(
                    Example(
                        text=str(row["text"]),
                        label=EmotionLabel(row["label"]),
                        domain=str(row.get("domain", "")),
                        style=str(row.get("style", "")),
                    )
                )
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: {exc}") from exc
    return examples


def split_of(text: str) -> Split:
    """The split a new example belongs in, by the text's hash: stable across machines."""
    bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "test" if bucket < TEST_PERCENT else "train"


def load(split: Split = "train") -> list[Example]:
    """The written examples of a split (the test split is never used for training or tuning)."""
    return read_jsonl(DATA_DIR / f"{split}.jsonl")


def load_heldout() -> list[Example]:
    """The independently written held-out set: for evaluation only."""
    return read_jsonl(DATA_DIR / HELDOUT_FILE)


def label_counts(examples: Sequence[Example]) -> dict[EmotionLabel, int]:
    """How many examples each label has."""
    counts = dict.fromkeys(EmotionLabel, 0)
    for ex in examples:
        counts[ex.label] += 1
    return counts
