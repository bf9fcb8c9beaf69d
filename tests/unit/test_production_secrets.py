"""Production refuses weak or development secrets, open widget origins and empty bearers;
agent passwords are argon2 hashes and tokens are revoked by a version bump."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.testclient import TestClient

from services.escalation import settings as escalation_settings
from services.escalation.auth import AgentAuth
from services.escalation.settings import EscalationSettings
from services.ingest import settings as ingest_settings
from services.ingest.settings import IngestSettings
from services.memory import settings as memory_settings
from services.memory.api import customer_router
from services.memory.settings import MemorySettings
from shared.credentials import (
    DEV_SECRET_VALUES,
    bearer_matches,
    require_explicit_origins,
    secret_problem,
)
from shared.http import install
from shared.passwords import hash_password

STRONG = secrets.token_urlsafe(32)
HASHED = hash_password("correct horse")
"""One production-cost argon2 hash for the whole module (each costs tenths of a second)."""
PROD_INFRA = {
    "CBD_ENVIRONMENT": "production",
    "CBD_PG_DSN": "postgresql://app:pw@db:5432/cbd",
    "CBD_REDIS_URL": "redis://:pw@redis:6379/0",
}


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key, value in PROD_INFRA.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


@pytest.mark.parametrize(
    "value",
    [
        "",
        "short",
        "dev-admin-token",
        "x" * 64,
        "passwordpasswordpasswordpassword",
        f"dev-admin-token-{STRONG}",
    ],
)
def test_weak_secrets_are_named(value: str) -> None:
    assert secret_problem(value) is not None


@pytest.mark.parametrize(
    "value", [secrets.token_urlsafe(32), secrets.token_hex(32), secrets.token_urlsafe(48)]
)
def test_random_secrets_pass(value: str) -> None:
    assert secret_problem(value) is None


def test_every_development_default_is_known() -> None:
    shipped = {
        memory_settings.DEV_ADMIN_TOKEN,
        escalation_settings.DEV_SECRET,
        *escalation_settings.DEV_AGENTS,
        *escalation_settings.DEV_AGENTS.values(),
        ingest_settings.DEV_API_KEY,
        ingest_settings.DEV_WIDGET_KEY,
        ingest_settings.DEV_IDENTITY_SECRET,
    }
    assert shipped <= DEV_SECRET_VALUES


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer right-token", True),
        ("bearer right-token", True),
        ("Bearer", False),
        ("Bearer ", False),
        ("Bearer  ", False),
        ("", False),
        (None, False),
        ("Basic right-token", False),
        ("Bearer wrong-token", False),
    ],
)
def test_bearer_check(header: str | None, ok: bool) -> None:
    assert bearer_matches(header, "right-token") is ok


def test_an_empty_expected_token_matches_nothing() -> None:
    assert not bearer_matches("Bearer", "")
    assert not bearer_matches("Bearer ", "")


def test_memory_admin_api_refuses_an_empty_bearer_even_with_an_empty_token() -> None:
    app = FastAPI()
    install(app, max_body_bytes=64 * 1024)
    app.include_router(customer_router(""))
    http = TestClient(app)
    for header in ("Bearer", "Bearer ", "bearer"):
        assert (
            http.get("/v1/customers/sam/export", headers={"authorization": header}).status_code
            == 401
        )


@pytest.mark.parametrize("token", ["", "dev-admin-token", "admin", "a" * 40])
def test_memory_refuses_a_weak_admin_token_in_production(
    production: pytest.MonkeyPatch, token: str
) -> None:
    production.setenv("CBD_MEMORY_ADMIN_TOKEN", token)
    with pytest.raises(ValidationError, match="CBD_MEMORY_ADMIN_TOKEN"):
        MemorySettings()


def test_memory_accepts_a_random_admin_token_in_production(production: pytest.MonkeyPatch) -> None:
    production.setenv("CBD_MEMORY_ADMIN_TOKEN", STRONG)
    assert MemorySettings().admin_token.get_secret_value() == STRONG


def _ingest_env(production: pytest.MonkeyPatch, **overrides: Any) -> None:
    env: dict[str, Any] = {
        "CBD_INGEST_REQUIRE_KEYS": "true",
        "CBD_INGEST_API_KEYS": {"acme": secrets.token_urlsafe(32)},
        "CBD_INGEST_IDENTITY_SECRETS": {"acme": secrets.token_urlsafe(32)},
        "CBD_INGEST_WIDGET_KEYS": {
            "pk_acme": {"tenant": "acme", "origins": ["https://shop.example.com"]}
        },
    }
    env.update(overrides)
    for key, value in env.items():
        production.setenv(key, value if isinstance(value, str) else json.dumps(value))


def test_ingest_accepts_strong_production_settings(production: pytest.MonkeyPatch) -> None:
    _ingest_env(production)
    assert IngestSettings().widget_keys["pk_acme"].origins == ["https://shop.example.com"]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"CBD_INGEST_API_KEYS": {"acme": "short-key"}}, "CBD_INGEST_API_KEYS"),
        ({"CBD_INGEST_IDENTITY_SECRETS": {"acme": ""}}, "CBD_INGEST_IDENTITY_SECRETS"),
        (
            {"CBD_INGEST_WIDGET_KEYS": {"pk": {"tenant": "acme", "origins": ["*"]}}},
            "not an explicit https origin",
        ),
        ({"CBD_INGEST_WIDGET_KEYS": {"pk": {"tenant": "acme"}}}, "not an explicit"),
        (
            {"CBD_INGEST_WIDGET_KEYS": {"pk": {"tenant": "acme", "origins": ["https://*.x.com"]}}},
            "not an explicit",
        ),
        (
            {"CBD_INGEST_WIDGET_KEYS": {"pk": {"tenant": "acme", "origins": ["http://x.com"]}}},
            "not an explicit",
        ),
    ],
)
def test_ingest_refuses_weak_production_settings(
    production: pytest.MonkeyPatch, override: dict[str, Any], reason: str
) -> None:
    _ingest_env(production, **override)
    with pytest.raises(ValidationError, match=reason):
        IngestSettings()


def test_explicit_origins() -> None:
    require_explicit_origins("x", ["https://shop.example.com", "https://a.example:8443"])
    for bad in (["*"], [], ["https://shop.example.com/path"], ["null"]):
        with pytest.raises(ValueError, match="x"):
            require_explicit_origins("x", bad)


def _escalation_env(production: pytest.MonkeyPatch, agents: dict[str, str], secret: str) -> None:
    production.setenv("CBD_ESCALATION_AGENTS", json.dumps(agents))
    production.setenv("CBD_ESCALATION_AGENT_TOKEN_SECRET", secret)


def test_escalation_accepts_hashed_agents_in_production(production: pytest.MonkeyPatch) -> None:
    _escalation_env(production, {"alice": HASHED}, STRONG)
    assert set(EscalationSettings().agents) == {"alice"}


@pytest.mark.parametrize(
    ("agents", "secret", "reason"),
    [
        ({"alice": "plain-text-password"}, STRONG, "argon2 hash"),
        ({"alice": "$argon2id$broken"}, STRONG, "argon2 hash"),
        ({"agent": "agent"}, STRONG, "CBD_ESCALATION_AGENTS"),
        ({"alice": "HASH", "agent": "HASH"}, STRONG, "development `agent` account"),
        ({"alice": "HASH"}, "", "CBD_ESCALATION_AGENT_TOKEN_SECRET"),
        ({"alice": "HASH"}, "dev-only-agent-token-secret", "CBD_ESCALATION_AGENT_TOKEN_SECRET"),
        ({}, STRONG, "no agents"),
    ],
)
def test_escalation_refuses_weak_production_settings(
    production: pytest.MonkeyPatch, agents: dict[str, str], secret: str, reason: str
) -> None:
    _escalation_env(
        production, {k: HASHED if v == "HASH" else v for k, v in agents.items()}, secret
    )
    with pytest.raises(ValidationError, match=reason):
        EscalationSettings()


def test_passwords_are_checked_against_argon2_hashes() -> None:
    auth = AgentAuth({"alice": HASHED, "bob": "dev-plain"}, STRONG)
    assert all(h.startswith("$argon2id$") for h in auth.agents.values())
    assert auth.login("alice", "correct horse") is not None
    assert auth.login("alice", "Correct horse") is None
    assert auth.login("bob", "dev-plain") is not None
    assert auth.login("mallory", "correct horse") is None
    assert "dev-plain" not in repr(auth.agents)


def test_a_new_token_version_revokes_old_tokens() -> None:
    auth = AgentAuth({"alice": "pw"}, STRONG)
    old = auth.login("alice", "pw")
    assert old is not None
    assert auth.verify(old) is not None
    auth.versions["alice"] += 1
    assert auth.verify(old) is None
    fresh = auth.issue("alice")
    verified = auth.verify(fresh)
    assert verified is not None
    assert verified.version == 1


def test_the_fingerprint_changes_with_the_credential_and_hides_it() -> None:
    one = AgentAuth({"alice": "pw-1"}, STRONG).fingerprint("alice")
    assert one == AgentAuth({"alice": "pw-1"}, STRONG).fingerprint("alice")
    assert one != AgentAuth({"alice": "pw-2"}, STRONG).fingerprint("alice")
    assert "pw-1" not in one
