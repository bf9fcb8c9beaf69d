"""Agent sign-in against real Redis and PostgreSQL: throttled per account and address, and a
changed password revokes the tokens issued under the old one, on every replica."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from pydantic import SecretStr

from services.escalation.api import agent_router
from services.escalation.auth import AgentAuth, LoginThrottle
from shared import db
from shared.http import install, provide
from shared.settings import PostgresSettings

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "escalation" / "migrations"
SECRET = secrets.token_urlsafe(32)


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pg = await db.create_pool(PostgresSettings(dsn=SecretStr(fresh_db)))
    await db.migrate(pg, "escalation", MIGRATIONS)
    yield pg
    await pg.close()


async def test_failed_sign_ins_are_throttled_per_account_and_address(
    redis_client: aioredis.Redis,
) -> None:
    throttle = LoginThrottle(
        redis_client, f"it-{uuid.uuid4().hex[:6]}:", per_account=3, per_address=5, window_s=60
    )
    for _ in range(3):
        assert await throttle.retry_after("alice", "10.0.0.1") is None
        await throttle.failed("alice", "10.0.0.1")
    wait = await throttle.retry_after("alice", "10.0.0.1")
    assert wait is not None
    assert 0 < wait <= 60
    # Another address may not try alice either; the account is what is guarded.
    assert await throttle.retry_after("alice", "10.0.0.2") is not None
    # The address has two more tries, on other accounts, then it is blocked for all of them.
    for agent in ("bob", "carol"):
        assert await throttle.retry_after(agent, "10.0.0.1") is None
        await throttle.failed(agent, "10.0.0.1")
    assert await throttle.retry_after("dave", "10.0.0.1") is not None
    assert await throttle.retry_after("dave", "10.0.0.3") is None


async def test_the_login_route_answers_429_with_retry_after(redis_client: aioredis.Redis) -> None:
    app = FastAPI()
    install(app, max_body_bytes=64 * 1024)
    app.include_router(agent_router())
    provide(app, AgentAuth({"alice": "right"}, SECRET))
    provide(app, LoginThrottle(redis_client, f"it-{uuid.uuid4().hex[:6]}:", per_account=2))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
        for _ in range(2):
            bad = await http.post(
                "/v1/agent/login", json={"agent_id": "alice", "password": "wrong"}
            )
            assert bad.status_code == 401
        blocked = await http.post(
            "/v1/agent/login", json={"agent_id": "alice", "password": "right"}
        )
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) > 0


async def test_a_changed_password_revokes_old_tokens_on_every_replica(pool: db.Pool) -> None:
    before = AgentAuth({"alice": "old-password", "bob": "bobs"}, SECRET)
    await before.sync_versions(pool)
    token = before.login("alice", "old-password")
    bob_token = before.login("bob", "bobs")
    assert token is not None
    assert bob_token is not None

    # A restart with alice's new password: start-up bumps her version.
    after = AgentAuth({"alice": "new-password", "bob": "bobs"}, SECRET)
    await after.sync_versions(pool)
    assert after.verify(token) is None
    assert after.verify(bob_token) is not None, "bob's credential did not change"
    # A second replica starting with the same settings agrees, and does not bump again.
    replica = AgentAuth({"alice": "new-password", "bob": "bobs"}, SECRET)
    await replica.sync_versions(pool)
    assert replica.versions == after.versions == {"alice": 1, "bob": 0}
    fresh = after.login("alice", "new-password")
    assert fresh is not None
    assert replica.verify(fresh) is not None

    await replica.revoke(pool, "alice")
    assert replica.verify(fresh) is None


async def test_a_revocation_on_one_replica_reaches_the_others_without_a_restart(
    pool: db.Pool,
) -> None:
    agents = {"alice": "pw-alice", "bob": "pw-bob"}
    one, other = AgentAuth(agents, SECRET), AgentAuth(agents, SECRET)
    await one.sync_versions(pool)
    await other.sync_versions(pool)
    token = one.login("alice", "pw-alice")
    bob_token = one.login("bob", "pw-bob")
    assert token is not None
    assert bob_token is not None
    assert other.verify(token) is not None

    async with other.watching_versions(pool, interval_s=0.05):
        await one.revoke(pool, "alice")
        # The other replica never restarts: its watch reads the new version within a few
        # intervals (bounded wait, so a broken watch fails instead of hanging).
        for _ in range(200):
            if other.verify(token) is None:
                break
            await asyncio.sleep(0.05)
        assert other.verify(token) is None, "the revoked token still works on the other replica"
        assert other.verify(bob_token) is not None, "only alice was signed out"
    # A fresh token at the new version works on both.
    fresh = one.login("alice", "pw-alice")
    assert fresh is not None
    assert other.verify(fresh) is not None


async def test_a_refresh_never_brings_a_revoked_version_back(pool: db.Pool) -> None:
    auth = AgentAuth({"alice": "pw"}, SECRET)
    await auth.sync_versions(pool)
    # This replica already knows of a later revocation than the row it reads (a read that
    # raced the revoking transaction): the refresh keeps the higher version.
    auth.versions["alice"] += 1
    await auth.refresh_versions(pool)
    assert auth.versions["alice"] == 1
