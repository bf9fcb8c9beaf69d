"""The customer ends the chat in a real browser: the widget sends the end, shows the survey,
and does not reopen the conversation.

Only the edge runs here (the ingest app under uvicorn, a recording bus for Kafka, fakeredis
for Redis): what is under test is the widget's side of the protocol, without an LLM. The same
intake calls run against the real Redis and broker in
tests/integration/test_ingest_end_of_chat.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import cast

import fakeredis
import pytest
import redis.asyncio as aioredis
import uvicorn
from playwright.async_api import Browser, expect

from services.ingest.settings import IngestSettings
from shared.events import CloseReason, ConversationClosedEvent, FeedbackReceivedEvent
from tests.e2e.browser import fresh_page, type_and_send
from tests.kit import RecordingBus
from tests.unit.conftest import started

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def edge() -> Iterator[tuple[str, RecordingBus]]:
    """The ingest app on a free port, with a recording bus."""
    bus = RecordingBus()
    redis = cast(aioredis.Redis, fakeredis.FakeAsyncRedis(decode_responses=True))
    app = started(IngestSettings(), bus, redis)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            threading.Event().wait(0.05)
        yield f"http://127.0.0.1:{port}", bus
    finally:
        server.should_exit = True
        thread.join(timeout=5)


async def _published(bus: RecordingBus, kind: type, count: int) -> None:
    for _ in range(100):
        if len(bus.events(kind)) >= count:
            return
        await asyncio.sleep(0.05)


async def test_ending_the_chat_closes_it_shows_the_survey_and_does_not_reopen_it(
    browser: Browser, edge: tuple[str, RecordingBus]
) -> None:
    base, bus = edge
    async with fresh_page(browser, base + "/") as page:
        await expect(page.locator(".status")).to_have_text("Connected", timeout=10_000)
        await type_and_send(page, "My parcel never came")
        await expect(page.locator(".msg-customer .msg-meta")).not_to_have_text(
            "Sending…", timeout=10_000
        )

        await page.get_by_role("button", name="End chat").click()
        await expect(page.get_by_role("radiogroup")).to_be_visible()
        # Once ended there is no chat to go back to.
        await expect(page.get_by_role("button", name="Back to chat")).to_be_hidden()
        await _published(bus, ConversationClosedEvent, 1)
        [closed] = bus.events(ConversationClosedEvent)
        assert closed.payload.reason is CloseReason.ENDED
        state = await page.evaluate("() => window.__cbdWidget.state()")
        assert state["ended"] is True
        assert closed.conversation_id == state["conversationId"]

        await page.get_by_role("radio", name="5 - Excellent").check()
        await page.get_by_role("button", name="Send rating").click()
        await expect(page.locator(".done-text")).to_contain_text("Your rating helps us")
        await _published(bus, FeedbackReceivedEvent, 1)
        [rating] = bus.events(FeedbackReceivedEvent)
        assert rating.conversation_id == closed.conversation_id
        assert rating.payload.rating == 5

        # A reload does not reopen the ended conversation: a new one starts.
        await page.reload()
        await expect(page.locator(".status")).to_have_text("Connected", timeout=10_000)
        state = await page.evaluate("() => window.__cbdWidget.state()")
        assert state["conversationId"] != closed.conversation_id
        assert state["ended"] is False
    assert len(bus.events(ConversationClosedEvent)) == 1
