"""Fixtures for the ingest edge's unit tests: the real app and routers, a recording bus, and
fakeredis in place of Redis (the Redis paths themselves are tested against the real server in
tests/integration)."""

from __future__ import annotations

from typing import cast

import fakeredis
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.testclient import TestClient

from services.ingest.app import create_app
from services.ingest.edge import EdgeGuard
from services.ingest.intake import Intake
from services.ingest.ownership import Owners
from services.ingest.settings import IngestSettings
from shared import http
from shared.kafka import EventBus
from tests.kit import RecordingBus


@pytest.fixture
def settings() -> IngestSettings:
    return IngestSettings()


@pytest.fixture
def fake_redis() -> aioredis.Redis:
    # One shared server behind per-loop clients: TestClient runs each request on its own loop.
    return cast(aioredis.Redis, fakeredis.FakeAsyncRedis(decode_responses=True))


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


def started(settings: IngestSettings, bus: RecordingBus, redis: aioredis.Redis) -> FastAPI:
    """The ingest app with what its lifespan would provide, minus the broker and listener."""
    app = create_app(settings)
    guard = EdgeGuard(settings, redis)
    owners = Owners(redis, settings.redis.key_prefix, settings.owner_ttl_s)
    http.provide(app, guard)
    http.provide(app, Intake(settings, cast(EventBus, bus), redis, guard, owners))
    return app


@pytest.fixture
def app(settings: IngestSettings, bus: RecordingBus, fake_redis: aioredis.Redis) -> FastAPI:
    return started(settings, bus, fake_redis)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    # Not entered as a context manager: the lifespan (broker, Redis) stays off in unit tests.
    return TestClient(app)
