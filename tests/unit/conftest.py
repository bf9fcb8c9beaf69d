"""Fixtures for the ingest edge's unit tests: the API with a recording bus, no broker, no Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from services.ingest.api import IngestAPI
from services.ingest.delivery import ConnectionHub
from services.ingest.settings import IngestSettings
from shared.events import Envelope
from shared.kafka import EventBus
from shared.topics import Topic


class RecordingBus:
    """Stands in for EventBus once the service has started."""

    def __init__(self) -> None:
        self.published: list[tuple[Topic, Envelope]] = []

    async def publish(self, topic: Topic, event: Envelope, *, confirm: bool = True) -> None:
        self.published.append((topic, event))


@pytest.fixture
def api() -> IngestAPI:
    return IngestAPI(IngestSettings(), ConnectionHub())


@pytest.fixture
def client(api: IngestAPI) -> Iterator[TestClient]:
    with TestClient(Starlette(routes=api.routes())) as test_client:
        yield test_client


@pytest.fixture
def bus(api: IngestAPI) -> RecordingBus:
    recording = RecordingBus()
    api.bus = cast(EventBus, recording)
    return recording
