"""The agent rates the bot's part of a ticket in the console, in a real browser.

The escalation routers (console page, agent API, live feed, bot rating) run under uvicorn in
the test's own event loop on the real PostgreSQL and Redis; a recording bus stands in for
Kafka. No LLM: a ticket is opened through the desk directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, expect

from cbd.procs import free_port
from services.escalation.api import REFUSALS, agent_router, console_router, live_router
from services.escalation.auth import AgentAuth, LoginThrottle
from services.escalation.bot_rating import bot_rating_router
from services.escalation.desk import AgentSkills, Desk
from services.escalation.live import CONSOLE_CHANNEL, AgentHub, ConsoleFeed
from shared import db
from shared.events import FeedbackReceivedEvent, RouteTarget
from shared.fanout import Fanout
from shared.http import install, provide
from shared.kafka import EventBus
from tests.e2e.browser import fresh_page
from tests.integration.conftest import (
    MEMORY_MIGRATIONS,
    desk,  # noqa: F401 - fixture
)
from tests.integration.test_desk import decision, turn_event
from tests.kit import RecordingBus, eventually

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def console_server(desk: Desk, bus: RecordingBus) -> AsyncIterator[str]:  # noqa: F811
    hub = AgentHub()
    fanout = Fanout(desk.redis, desk.prefix, channel=CONSOLE_CHANNEL, receiver=hub)
    app = FastAPI()
    install(app, max_body_bytes=64 * 1024, refusals=REFUSALS)
    for router in (console_router(), agent_router(), live_router(), bot_rating_router()):
        app.include_router(router)
    auth = AgentAuth({"agent": "agent"}, secrets.token_urlsafe(32))
    for value in (auth, desk, hub, AgentSkills({}), ConsoleFeed(fanout)):
        provide(app, value)
    provide(app, LoginThrottle(desk.redis, desk.prefix))
    provide(app, bus, as_=EventBus)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    async with fanout.listening():

        async def started() -> bool | None:
            return True if server.started else None

        await eventually(started, timeout_s=15, interval_s=0.05, what="the console server")
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task


async def test_the_agent_rates_the_bot_once_from_the_console(
    browser: Browser,
    desk: Desk,  # noqa: F811
) -> None:
    # The handoff packet reads memory's record of the conversation.
    await db.migrate(desk.pg, "memory", MEMORY_MIGRATIONS)
    conv = f"conv-{uuid.uuid4().hex[:8]}"
    decided = await desk.route(
        turn_event(conv, "a person please"), lambda _: decision(RouteTarget.HUMAN)
    )
    assert decided.handoff is not None
    bus = RecordingBus()
    async with console_server(desk, bus) as base, fresh_page(browser, base + "/console") as page:
        await page.locator("#agent-id").fill("agent")
        await page.locator("#password").fill("agent")
        await page.locator("#login-submit").click()
        ticket = page.locator(f'#queue .ticket[data-conversation-id="{conv}"]')
        await expect(ticket).to_have_count(1, timeout=15_000)
        await ticket.locator(".ticket-btn").click()
        card = page.locator("#bot-rating")
        await expect(page.locator("#claim")).to_be_visible()
        await expect(card).to_be_hidden()  # only the agent holding the ticket rates
        await page.locator("#claim").click()
        await expect(page.locator("#ticket-status")).to_have_text("Claimed by you")
        await expect(card).to_be_visible(timeout=10_000)

        await page.locator("#bot-rating-submit").click()
        await expect(page.locator("#bot-rating-error")).to_have_text("Choose a rating from 1 to 5.")
        await page.get_by_role("radio", name="2").check()
        await page.locator("#bot-rating-comment").fill("It kept sending the same link.")
        await page.locator("#bot-rating-submit").click()
        await expect(page.locator("#bot-rating-done")).to_have_text(
            "You rated the bot 2/5: \u201cIt kept sending the same link.\u201d"
        )
        await expect(page.locator("#bot-rating-form")).to_be_hidden()

        # Opened again later: the rating is shown, not asked for twice.
        await page.reload()
        await page.locator(f'#queue .ticket[data-conversation-id="{conv}"] .ticket-btn').click()
        await expect(page.locator("#bot-rating-done")).to_contain_text("2/5", timeout=10_000)
        await expect(page.locator("#bot-rating-form")).to_be_hidden()
    [rating] = bus.events(FeedbackReceivedEvent)
    assert rating.payload.source == "agent"
    assert rating.payload.agent_id == "agent"
    assert rating.payload.rating == 2
    assert rating.conversation_id == conv
