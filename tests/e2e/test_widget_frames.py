"""The widget in Chromium, fed frames by a scripted socket instead of the platform.

Some frame orders are hard to produce on the real platform at will (a person taking the
conversation between two slices of a bot reply); a scripted socket plays them exactly, and the
browser runs the widget's real code on them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, WebSocket
from playwright.async_api import Browser

from services.ingest.routers.pages import router as ingest_pages
from services.ingest.settings import IngestSettings
from shared.http import provide
from tests.e2e.browser import fresh_page
from tests.kit import serving


def scripted_app(frames: asyncio.Queue[dict[str, Any]]) -> FastAPI:
    """The chat page, and a conversation socket that sends whatever the test queues."""
    app = FastAPI()
    app.include_router(ingest_pages)
    provide(app, IngestSettings())

    @app.websocket("/v1/conversations/{conversation_id}/ws")
    async def socket(ws: WebSocket, conversation_id: str) -> None:
        await ws.accept()
        await ws.send_json({"type": "resumed", "replayed": 0, "last_id": None, "complete": True})
        while True:
            await ws.send_json(await frames.get())

    return app


def bubble_text(reply_id: str) -> str:
    return f"""() => {{
        const el = document.querySelector('.msg[data-reply-id="{reply_id}"] .msg-text');
        return el ? el.textContent : null; }}"""


async def test_a_withdrawn_reply_is_taken_off_the_page_and_stays_off(browser: Browser) -> None:
    frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    turn = "7d1c1f0e-0000-4000-8000-000000000001"

    def delta(seq: int, text: str, **extra: Any) -> dict[str, Any]:
        frame = {"type": "delta", "turn_id": turn, "reply_id": "r1", "seq": seq, "text": text}
        return frame | extra

    async with serving(scripted_app(frames)) as (base,), fresh_page(browser, base + "/") as page:
        await frames.put(delta(0, "Let me"))
        await page.wait_for_function(f"() => ({bubble_text('r1')})() === 'Let me'")
        await frames.put(delta(1, "", withdrawn=True))
        # A straggler of the withdrawn reply, then the person's answer.
        await frames.put(delta(2, " check"))
        await frames.put(
            {
                "type": "reply",
                "turn_id": turn,
                "reply_id": "r2",
                "author": "agent",
                "text": "Hi, I'm Dana. I have your order here.",
                "flags": [],
            }
        )
        await page.wait_for_function(f"() => ({bubble_text('r2')})() !== null")
        assert await page.evaluate(bubble_text("r1")) is None
