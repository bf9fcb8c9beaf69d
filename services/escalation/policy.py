"""The routing policy: who answers a turn, and why.

Decisions come from structured signals that earlier stages attached (never from parsing an
LLM's text), so the same turn always gets the same verdict and every verdict can be explained.
"""

from __future__ import annotations

from shared.events import RouteReason, RouteTarget, RoutingDecision, TurnContextualized

POLICY_NAME = "explicit-request-v1"


def decide(turn: TurnContextualized) -> RoutingDecision:
    """Route to a human when the customer asked for one; otherwise the bot answers."""
    asked = [s for s in turn.emotion.signals if s.name == "human_request"]
    if asked:
        return RoutingDecision(
            target=RouteTarget.HUMAN,
            reasons=[
                RouteReason(code="explicit_request", detail=f"customer asked: {s.evidence!r}")
                for s in asked
            ],
            policy=POLICY_NAME,
        )
    return RoutingDecision(
        target=RouteTarget.BOT,
        reasons=[RouteReason(code="default", detail="no escalation rule matched")],
        policy=POLICY_NAME,
    )
