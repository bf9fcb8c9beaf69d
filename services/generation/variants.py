"""Baseline vs Care-by-Design: which prompt a conversation gets, for A/B comparison.

Like the paper's Model A (a plain assistant) and Model B (prompted to understand feelings and
be a caring friend), each conversation is assigned one variant for its whole life, so ratings
and outcomes can be compared per variant. The assignment is a stable hash of the conversation
id (and a salt that starts a fresh experiment), so every replica and every redelivery agrees
without any shared state.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum


class Variant(StrEnum):
    """The prompt a reply was written with; recorded as `ReplyGenerated.variant`."""

    BASELINE = "baseline"
    """A plain customer-service assistant prompt, with the same knowledge and guardrails."""
    CARE = "care"
    """The full Care-by-Design prompt: emotion strategy, playbook, memory, knowledge."""


def bucket(conversation_id: str, salt: str = "") -> float:
    """A number in [0, 1) that is the same for a conversation wherever it is computed."""
    digest = hashlib.sha256(f"{salt}:{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_variant(conversation_id: str, baseline_share: float, salt: str = "") -> Variant:
    """The conversation's variant: `baseline_share` of conversations get the baseline."""
    if baseline_share <= 0.0:
        return Variant.CARE
    return Variant.BASELINE if bucket(conversation_id, salt) < baseline_share else Variant.CARE
