"""The customer chat page in a real browser (Chromium driven by Playwright), on the real platform.

The page is served by ingest at `/`: the widget (widget.js) in page mode, the one chat
client. Everything behind it (broker, PostgreSQL, Redis, the LLM server and the six services)
is the session's `platform`. A MutationObserver installed before
the page's own script records every state a reply bubble goes through, so streaming is checked
from what the customer actually saw, not from how often the test happened to poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Browser, Page, expect

from cbd.runtime import Platform
from tests.e2e.browser import fresh_page, type_and_send
from tests.kit import REPLY_WAIT_S

pytestmark = pytest.mark.e2e

# A checked reply may take two LLM calls (a draft that fails the care check is regenerated once)
# on a busy two-core runner; this is a wait, not a speed check.
REPLY_TIMEOUT_MS = int(REPLY_WAIT_S * 1000)

# Runs before the page's script: remembers when Enter went down in the composer and every
# distinct state of every reply bubble (author class, streaming or not, text so far).
RECORDER_JS = """
(() => {
  const rec = { sendAt: null, bubbles: {} };
  window.__cbdRec = rec;
  window.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && ev.target && ev.target.id === 'cbd-input'
        && rec.sendAt === null) {
      rec.sendAt = performance.now();
    }
  }, true);
  const snapshot = () => {
    for (const el of document.querySelectorAll('.msg[data-reply-id]')) {
      const id = el.dataset.replyId;
      const b = rec.bubbles[id] || (rec.bubbles[id] = { samples: [] });
      const textEl = el.querySelector('.msg-text');
      const s = {
        t: performance.now(),
        author: ['msg-bot', 'msg-agent', 'msg-system'].find((c) => el.classList.contains(c))
          || null,
        streaming: el.classList.contains('streaming'),
        text: textEl ? textEl.textContent : '',
        flags: el.dataset.flags || '',
      };
      const last = b.samples[b.samples.length - 1];
      if (!last || last.author !== s.author || last.streaming !== s.streaming
          || last.text !== s.text || last.flags !== s.flags) {
        b.samples.push(s);
      }
    }
  };
  new MutationObserver(snapshot).observe(document, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
})();
"""

FINAL_BOT_REPLY_JS = """
() => {
  const el = document.querySelector('.msg.msg-bot[data-reply-id]');
  if (!el || el.classList.contains('streaming')) return false;
  const text = el.querySelector('.msg-text');
  return !!text && text.textContent.trim().length > 0;
}
"""

FINAL_SYSTEM_NOTICE_JS = """
() => {
  const el = document.querySelector('.msg.msg-system[data-reply-id]');
  if (!el || el.classList.contains('streaming')) return false;
  const text = el.querySelector('.msg-text');
  return !!text && text.textContent.trim().length > 0;
}
"""


@pytest.fixture
async def chat_page(browser: Browser, platform: Platform) -> AsyncIterator[Page]:
    """A fresh browser context (own storage, so its own conversation) on the chat page."""
    async with fresh_page(
        browser, platform.url("ingest") + "/", init_script=RECORDER_JS, width=900, height=760
    ) as page:
        await expect(page.locator(".status")).to_have_attribute(
            "data-state", "connected", timeout=15_000
        )
        await expect(page.locator(".status")).to_have_text("Connected")
        # Page mode: no launcher to open, nothing to close; the chat is the page.
        await expect(page.locator(".launcher")).to_be_hidden()
        await expect(page.locator("#cbd-input")).to_be_visible()
        yield page


async def bubble_history(page: Page) -> dict[str, Any]:
    rec: dict[str, Any] = await page.evaluate("() => window.__cbdRec")
    return rec


async def wait_for_turns(dsn: str, conversation_id: str, timeout_s: float = 10.0) -> list[Any]:
    """The stored turns of the conversation, once a customer and a bot row are both there."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT role, text FROM memory.turns WHERE conversation_id = $1 "
                "ORDER BY occurred_at",
                conversation_id,
            )
            roles = {r["role"] for r in rows}
            if {"customer", "bot"} <= roles or time.monotonic() > deadline:
                return list(rows)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def test_chat_page_streams_the_reply_and_it_is_stored(
    chat_page: Page, platform: Platform, tmp_path: Path
) -> None:
    page = chat_page
    message = "Hi! Can you help me track my order?"
    sent_at = await type_and_send(page, message)

    customer = page.locator(".msg.msg-customer")
    await expect(customer).to_have_count(1)
    await expect(customer.locator(".msg-text")).to_have_text(message)
    await expect(page.locator("#cbd-input")).to_have_value("")

    await page.wait_for_function(FINAL_BOT_REPLY_JS, timeout=REPLY_TIMEOUT_MS, polling=250)
    elapsed_s = time.monotonic() - sent_at
    await expect(customer).to_have_attribute("data-state", "sent")

    bot = page.locator(".msg.msg-bot")
    await expect(bot).to_have_count(1)
    final_text = (await bot.locator(".msg-text").text_content() or "").strip()
    assert final_text
    assert await bot.get_attribute("aria-hidden") is None
    flags = (await bot.get_attribute("data-flags") or "").split()
    assert "llm_fallback" not in flags, f"the LLM did not answer: {flags}"
    await expect(page.locator(".msg.streaming")).to_have_count(0)
    await expect(page.locator(".typing")).to_be_hidden()

    # What the customer saw on the way: growing partial text while streaming, then the reply.
    rec = await bubble_history(page)
    reply_id = await bot.get_attribute("data-reply-id")
    assert reply_id in rec["bubbles"], rec
    samples: list[dict[str, Any]] = rec["bubbles"][reply_id]["samples"]
    streamed = [s for s in samples if s["streaming"] and s["text"]]
    partial_lengths = sorted({len(s["text"]) for s in streamed})
    assert len(partial_lengths) >= 2, f"the reply was not streamed: {samples}"
    assert len(streamed[0]["text"].strip()) < len(final_text)
    assert all(s["author"] == "msg-bot" for s in samples), samples
    assert not samples[-1]["streaming"]
    assert samples[-1]["text"].strip() == final_text

    browser_ms = ""
    if rec["sendAt"] is not None:
        first_ms = streamed[0]["t"] - rec["sendAt"]
        final_ms = samples[-1]["t"] - rec["sendAt"]
        browser_ms = f" (in page: first text {first_ms:.0f} ms, final reply {final_ms:.0f} ms)"
    print(
        f"\nchat page: send -> final reply {elapsed_s * 1000:.0f} ms{browser_ms}; "
        f"{len(streamed)} streamed states, {len(final_text)} chars: {final_text!r}"
    )

    # The conversation the page used has both sides stored.
    conversation_id = await page.evaluate("() => window.__cbdWidget.state().conversationId")
    assert isinstance(conversation_id, str)
    assert conversation_id.startswith("conv-")
    turns = await wait_for_turns(platform.stack.env()["CBD_PG_DSN"], conversation_id)
    pairs = [(t["role"], t["text"]) for t in turns]
    assert ("customer", message) in pairs, pairs
    assert ("bot", final_text) in pairs, pairs

    # The page is the widget, so it resumes: after a reload the conversation is all there.
    await page.reload()
    await expect(page.locator(".msg.msg-customer .msg-text")).to_have_text(message)
    await expect(page.locator(".msg.msg-bot .msg-text")).to_have_text(final_text)
    assert await page.evaluate("() => window.__cbdWidget.state().conversationId") == (
        conversation_id
    )

    shot = tmp_path / "chat-page.png"
    await page.screenshot(path=shot, full_page=True)
    print(f"screenshot: {shot}")


async def test_asking_for_a_person_shows_a_handoff_notice_not_a_bot_reply(
    chat_page: Page,
) -> None:
    page = chat_page
    await type_and_send(page, "let me talk to a real person")
    await expect(page.locator(".msg.msg-customer .msg-text")).to_have_text(
        "let me talk to a real person"
    )

    await page.wait_for_function(FINAL_SYSTEM_NOTICE_JS, timeout=REPLY_TIMEOUT_MS, polling=250)
    notice = page.locator(".msg.msg-system")
    await expect(notice).to_have_count(1)
    notice_text = (await notice.locator(".msg-text").text_content() or "").strip()
    assert notice_text.startswith("Of course. I'm bringing in a member of our team now")
    assert "the wait is about" in notice_text
    flags = (await notice.get_attribute("data-flags") or "").split()
    assert "handoff" in flags, flags

    # No LLM reply: no bot bubble now, and none ever existed on the way.
    await expect(page.locator(".msg.msg-bot")).to_have_count(0)
    rec = await bubble_history(page)
    seen = {s["author"] for b in rec["bubbles"].values() for s in b["samples"]}
    assert seen == {"msg-system"}, rec
