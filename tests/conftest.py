"""Shared fixtures: the real embedded servers and, for end-to-end tests, the six services.

One platform per test session: PostgreSQL, Redis, the Kafka-protocol broker and the LLM
server are started by the fixture itself, on free ports under a temporary directory, and
stopped at the end. Integration tests that drive Kafka directly use their own topic prefix,
so they never feed the running services.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from cbd.procs import free_port
from cbd.runtime import Platform
from shared.settings import KafkaSettings

CHANNEL_ENV = {
    "CBD_INGEST_TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
    "CBD_INGEST_TWILIO_AUTH_TOKEN": "test-twilio-auth-token",
    "CBD_INGEST_TWILIO_SMS_FROM": "+15005550006",
    "CBD_INGEST_TWILIO_WHATSAPP_FROM": "whatsapp:+14155238886",
    "CBD_INGEST_VOICE_AGENT_NUMBER": "+15005550001",
    "CBD_INGEST_WHATSAPP_APP_SECRET": "test-meta-app-secret",
    "CBD_INGEST_WHATSAPP_VERIFY_TOKEN": "test-verify-token",
    "CBD_INGEST_WHATSAPP_ACCESS_TOKEN": "test-meta-access-token",
    "CBD_INGEST_WHATSAPP_PHONE_NUMBER_ID": "106540352242922",
    "CBD_INGEST_BURST_WINDOW_MS": "1500",
    # A busy two-core runner can take longer than a caller should wait for the tiny LLM.
    "CBD_INGEST_VOICE_MAX_WAITS": "10",
}


@pytest.fixture(scope="session")
def _platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform, not started: the servers start with `stack_env`, services with `platform`."""
    run_dir: Path = tmp_path_factory.mktemp("platform")
    standin = f"http://127.0.0.1:{free_port()}"
    plat = Platform.for_tests(
        run_dir,
        extra_env={
            # Short replies keep the suite fast on two cores; the path is the same.
            "CBD_GENERATION_MAX_TOKENS": "48",
            # A cold LLM on a busy 2-core runner can be slow to start; the fallback reply (and
            # the ticket it opens) is tested on its own, not left to chance here. A reply that
            # started is let finish. tests/kit.py's REPLY_WAIT_S is sized from these.
            "CBD_GENERATION_FIRST_TOKEN_TIMEOUT_S": "45",
            "CBD_GENERATION_TOTAL_TIMEOUT_S": "90",
            # Suggestions for agents share the one-request-at-a-time LLM with customers'
            # replies: short ones still exercise the path.
            "CBD_GENERATION_ASSIST_MAX_TOKENS": "24",
            # The shared platform streams unchecked replies, so the channel, widget and resume
            # tests see one LLM call per turn; the checked mode (regeneration, composed replies)
            # is tested against the real model in tests/e2e/test_generation_replies.py.
            "CBD_GENERATION_REPLY_MODE": "llm",
            "CBD_LOG_LEVEL": "INFO",
            # The 50-message handoff test is one customer; the limit itself is tested apart.
            "CBD_INGEST_CUSTOMER_RATE_PER_MIN": "1000",
            # Every test client comes from 127.0.0.1; the address limit is tested on its own.
            "CBD_INGEST_IP_RATE_PER_MIN": "100000",
            # Messaging providers: a local stand-in (tests/e2e/provider_standin.py) plays
            # Twilio's and Meta's APIs, with these credentials.
            **CHANNEL_ENV,
            "CBD_INGEST_TWILIO_API_BASE": standin,
            "CBD_INGEST_WHATSAPP_API_BASE": f"{standin}/v21.0",
        },
    )
    try:
        yield plat
    finally:
        plat.stop()


@pytest.fixture(scope="session")
def stack_env(_platform: Platform) -> dict[str, str]:
    """The embedded servers (broker, PostgreSQL, Redis, LLM), started once, and their settings.

    Tests that only need the servers do not wait for the six services.
    """
    _platform.stack.start()
    return _platform.stack.env()


@pytest.fixture(scope="session")
def platform(_platform: Platform, stack_env: dict[str, str]) -> Platform:
    """The whole platform: embedded servers plus every service as its own process."""
    _platform.start_services()
    return _platform


@pytest.fixture
def isolated_kafka(stack_env: dict[str, str]) -> KafkaSettings:
    """Kafka settings with a topic prefix of this test's own."""
    return KafkaSettings(
        bootstrap_servers=stack_env["CBD_KAFKA_BOOTSTRAP_SERVERS"],
        topic_prefix=f"it-{secrets.token_hex(4)}.",
        partitions=1,
    )


@pytest.fixture
async def fresh_db(stack_env: dict[str, str]) -> AsyncIterator[str]:
    """The DSN of a brand-new database, dropped after the test."""
    admin_dsn = stack_env["CBD_PG_DSN"]
    name = f"it_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def redis_client(stack_env: dict[str, str]) -> AsyncIterator[aioredis.Redis]:
    """A client of the embedded Redis."""
    client = aioredis.from_url(stack_env["CBD_REDIS_URL"], decode_responses=True)
    yield client
    await client.aclose()
