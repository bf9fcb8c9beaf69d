"""Pure parts of the handoff desk and agent sign-in."""

from __future__ import annotations

import yaml

from services.escalation.auth import AgentAuth
from services.escalation.desk import eta_minutes, priority_of, severity_of
from services.escalation.policy import DEFAULT_POLICY_PATH, load_policy
from shared.events import RouteReason

SHIPPED = load_policy(DEFAULT_POLICY_PATH)


def reasons(*codes: str) -> list[RouteReason]:
    """Reasons as the shipped policy's rules give them, severity included."""
    declared = dict(SHIPPED.rules.enabled())
    return [RouteReason(code=c, detail=c, severity=declared[c].severity) for c in codes]


def test_severity_follows_the_most_serious_rule() -> None:
    assert severity_of(reasons("sensitive_topic")) == "high"
    assert severity_of(reasons("explicit_request", "strong_emotion")) == "high"
    assert severity_of(reasons("explicit_request")) == "medium"
    assert severity_of(reasons("no_resolution", "bot_loop")) == "low"
    assert severity_of([RouteReason(code="human_owns", detail="agent has it")]) == "low"


def test_every_shipped_rule_declares_its_severity() -> None:
    raw = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    assert all("severity" in rule for rule in raw["rules"].values())


def test_priority_orders_by_severity_then_risk() -> None:
    assert priority_of("high", 0.0) > priority_of("medium", 1.0) > priority_of("low", 1.0)
    assert priority_of("medium", 0.9) > priority_of("medium", 0.1)
    assert priority_of("low", 5.0) == priority_of("low", 1.0)


def test_eta_shares_the_queue_among_agents_on_shift() -> None:
    assert eta_minutes(1, handle_minutes=4, agents_on_shift=2) == 2
    assert eta_minutes(3, handle_minutes=4, agents_on_shift=2) == 6
    assert eta_minutes(1, handle_minutes=0.5, agents_on_shift=4) == 1


def test_agent_tokens_are_signed_expiring_and_tied_to_known_agents() -> None:
    auth = AgentAuth({"alice": "pw-a", "bob": "pw-b"}, "secret", ttl_s=60)
    assert auth.login("alice", "wrong") is None
    assert auth.login("mallory", "pw-a") is None
    token = auth.login("alice", "pw-a")
    assert token is not None
    verified = auth.verify(token)
    assert verified is not None
    assert verified.agent_id == "alice"
    assert auth.verify(token, now=verified.expires_at + 1) is None
    assert AgentAuth({"alice": "pw-a"}, "other-secret").verify(token) is None
    body, signature = token.split(".")
    assert auth.verify(body + "." + signature[::-1]) is None
    assert auth.verify("garbage") is None
    assert AgentAuth({"bob": "pw-b"}, "secret").verify(token) is None


def test_valued_customers_come_first_within_a_severity() -> None:
    assert priority_of("medium", 0.5, "platinum") > priority_of("medium", 0.5, "gold")
    assert priority_of("medium", 0.5, "gold") > priority_of("medium", 0.5, None)
    assert priority_of("medium", 0.5, "Gold ") == priority_of("medium", 0.5, "gold")
    # Value never lifts a ticket above a more severe one.
    assert priority_of("high", 0.0, None) > priority_of("medium", 1.0, "platinum")
