"""Recall quality: does top-k semantic recall surface the memory a good agent would want?

Scored on the hand-labelled set in `data/recall.jsonl` (see data/RECALL_DATASHEET.md): each case
is one customer's memories and a message; a case is a hit when any of its relevant memories is
among the k most similar to the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.embedding import Embedder

RECALL_SET = Path(__file__).parent / "data" / "recall.jsonl"


@dataclass(frozen=True)
class RecallCase:
    """One labelled case."""

    case_id: str
    split: str
    memories: list[str]
    query: str
    relevant: list[int]


def load_cases(path: Path = RECALL_SET, split: str | None = None) -> list[RecallCase]:
    """The labelled cases, optionally one split only."""
    cases = []
    for line in path.read_text().splitlines():
        if line.strip():
            raw = json.loads(line)
            cases.append(
                RecallCase(raw["id"], raw["split"], raw["memories"], raw["query"], raw["relevant"])
            )
    return [c for c in cases if split is None or c.split == split]


def recall_at_k(cases: list[RecallCase], embedder: Embedder, k: int = 3) -> tuple[float, list[str]]:
    """The share of cases whose top-k contains a relevant memory, and the ids of the misses."""
    misses = []
    for case in cases:
        vectors = embedder.embed([case.query, *case.memories])
        scores = vectors[1:] @ vectors[0]
        top = set(np.argsort(-scores)[:k].tolist())
        if not top & set(case.relevant):
            misses.append(case.case_id)
    return 1.0 - len(misses) / len(cases), misses
