"""The agent console and the customer chat page side by side, in one real browser.

A customer gets angrier over three messages on the chat page until the escalation policy hands
the conversation to a person; an agent signs in on the console, finds the conversation in the
queue, claims it, reads the handoff packet and answers. The answer must reach the customer's
page, and the customer's next message must reach the console over its WebSocket, each within
a few seconds. Everything behind both pages is the session's `platform`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from cbd.runtime import Platform
from tests.e2e.browser import record_errors, type_and_send
from tests.kit import REPLY_WAIT_S

pytestmark = pytest.mark.e2e

# A checked reply may take two LLM calls on a busy two-core runner: a wait, not a speed check.
BOT_REPLY_TIMEOUT_MS = int(REPLY_WAIT_S * 1000)
LIVE_TIMEOUT_MS = 10_000
"""What the brief promises: agent reply -> customer, customer message -> console."""

ANGRY_CUSTOMER = [
    "My order hasn't arrived and it's been two weeks.",
    # Not "I've asked twice already": saying so is a repeat contact, which goes to a person at
    # once (policy rule repeat_contact), and this scenario is about emotion rising.
    "The tracking hasn't changed in days and nobody has helped me.",
    "This is absolutely unacceptable, I am furious!!",
]
SHOWN_JS = """
() => Array.from(document.querySelectorAll('.msg')).map((el) => el.outerHTML.slice(0, 400))
"""
AGENT_REPLY = "Hi, I'm Dana from the support team. I'm so sorry, I'm checking your order now."
CUSTOMER_FOLLOW_UP = "Thank you. The order number is 48213."
HANDOFF_PREFIX = "Of course. I'm bringing in a member of our team now"

# How many reply bubbles (bot, agent or system) have their final text: streaming is over.
FINAL_REPLIES_JS = """
(n) => Array.from(document.querySelectorAll('.msg[data-reply-id]')).filter((el) => {
  if (el.classList.contains('streaming')) return false;
  const text = el.querySelector('.msg-text');
  return !!text && text.textContent.trim().length > 0;
}).length >= n
"""


async def open_page(
    browser: Browser, url: str, viewport: dict[str, int], errors: list[str], name: str
) -> tuple[BrowserContext, Page]:
    """A fresh context (own storage) on `url`, recording page errors and CSP refusals."""
    context = await browser.new_context(viewport={"width": viewport["w"], "height": viewport["h"]})
    page = await context.new_page()
    record_errors(page, errors, name)
    await page.goto(url)
    return context, page


async def sign_in(http: httpx.AsyncClient) -> dict[str, str]:
    """The Authorization header of a fresh token for the development agent."""
    login = await http.post("/v1/agent/login", json={"agent_id": "agent", "password": "agent"})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['token']}"}


async def api_ticket(platform: Platform, conversation_id: str) -> dict[str, Any]:
    """The conversation's ticket as GET /v1/agent/queue lists it."""
    async with httpx.AsyncClient(base_url=platform.url("escalation"), timeout=20) as http:
        headers = await sign_in(http)
        tickets = (await http.get("/v1/agent/queue", headers=headers)).json()["tickets"]
    mine = [t for t in tickets if t["conversation_id"] == conversation_id]
    assert len(mine) == 1, tickets
    found: dict[str, Any] = mine[0]
    return found


async def resolve_quietly(platform: Platform, ticket_id: str) -> None:
    """Close the ticket so later tests do not see it waiting; never hides the test's failure."""
    async with httpx.AsyncClient(base_url=platform.url("escalation"), timeout=20) as http:
        try:
            headers = await sign_in(http)
            await http.post(f"/v1/agent/tickets/{ticket_id}/resolve", headers=headers)
        except (httpx.HTTPError, AssertionError):
            pass


async def test_agent_takes_over_an_angry_conversation_from_the_console(
    browser: Browser, platform: Platform, tmp_path: Path
) -> None:
    errors: list[str] = []
    contexts: list[BrowserContext] = []
    ticket_id = ""
    try:
        # -- the customer gets angry on the chat page -----------------------------------------
        ctx, chat = await open_page(
            browser, platform.url("ingest") + "/", {"w": 900, "h": 760}, errors, "chat"
        )
        contexts.append(ctx)
        await expect(chat.locator(".status")).to_have_attribute(
            "data-state", "connected", timeout=15_000
        )
        # The message after which the conversation went to a person: the furious third one,
        # unless the bot's own reply was flagged first (in `llm` mode a model that leaks the
        # prompt twice is replaced by the safe reply, which asks a colleague to look): what
        # the model writes decides which, so both are checked for what must then hold.
        handoff_at = 0
        for i, text in enumerate(ANGRY_CUSTOMER, start=1):
            await type_and_send(chat, text)
            await expect(chat.locator(".msg.msg-customer")).to_have_count(i)
            if handoff_at:
                continue  # a person holds the conversation: nothing answers until they do
            # One answer per message before the next, as a person would wait for it.
            try:
                await chat.wait_for_function(
                    FINAL_REPLIES_JS, arg=i, timeout=BOT_REPLY_TIMEOUT_MS, polling=500
                )
            except PlaywrightTimeoutError as exc:
                shown = await chat.evaluate(SHOWN_JS)
                raise AssertionError(f"no final reply {i} on the chat page: {shown}") from exc
            if await chat.locator(".msg.msg-system").count():
                handoff_at = i
        customer_texts = chat.locator(".msg.msg-customer .msg-text")
        await expect(customer_texts).to_have_text(ANGRY_CUSTOMER)
        assert handoff_at, await chat.evaluate(SHOWN_JS)

        # The bot answers until the handoff; the handoff turn gets the notice instead.
        bot_replies = handoff_at - 1
        await expect(chat.locator(".msg.msg-bot")).to_have_count(bot_replies)
        notice = chat.locator(".msg.msg-system")
        await expect(notice).to_have_count(1)
        await expect(notice.locator(".msg-text")).to_contain_text(HANDOFF_PREFIX)
        flags = (await notice.get_attribute("data-flags") or "").split()
        assert "handoff" in flags, flags
        conversation_id = await chat.evaluate("() => window.__cbdWidget.state().conversationId")
        assert isinstance(conversation_id, str)
        assert conversation_id.startswith("conv-")

        # -- the agent signs in and finds it in the queue -------------------------------------
        ctx, console = await open_page(
            browser,
            platform.url("escalation") + "/console",
            {"w": 1366, "h": 900},
            errors,
            "console",
        )
        contexts.append(ctx)
        await expect(console.locator("#login-form")).to_be_visible()
        await console.locator("#agent-id").fill("agent")
        await console.locator("#password").fill("agent")
        await console.locator("#login-submit").click()
        await expect(console.locator("#app")).to_be_visible()
        await expect(console.locator("#ws-status")).to_have_attribute(
            "data-state", "connected", timeout=LIVE_TIMEOUT_MS
        )

        ticket = console.locator(f'#queue .ticket[data-conversation-id="{conversation_id}"]')
        await expect(ticket).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
        await expect(ticket).to_have_attribute("data-status", "queued")
        ticket_id = await ticket.get_attribute("data-ticket-id") or ""
        listed = await api_ticket(platform, conversation_id)
        assert listed["ticket_id"] == ticket_id
        codes = [r["code"] for r in listed["reasons"]]
        # Emotion alone escalated it: strong anger on the third message (no request for a
        # person); or, before that, the bot's flagged reply did.
        reason = "strong_emotion" if "strong_emotion" in codes else "generation_flags"
        assert reason in codes, listed["reasons"]
        if handoff_at < len(ANGRY_CUSTOMER):
            assert reason == "generation_flags", listed["reasons"]
        assert "explicit_request" not in codes, listed["reasons"]
        print(f"\nescalated for: {[(r['code'], r.get('detail')) for r in listed['reasons']]}")
        label = reason.replace("_", " ").capitalize()
        await expect(ticket.locator(".chip").first).to_be_visible()
        await expect(ticket.locator(".chip")).to_contain_text([label])

        # -- selects and claims it ------------------------------------------------------------
        await ticket.locator(".ticket-btn").click()
        await expect(ticket).to_have_attribute("aria-current", "true")
        await expect(console.locator("#ticket-reasons")).to_contain_text(label)
        claim = console.locator("#claim")
        await expect(claim).to_be_visible()
        await expect(console.locator("#reply-input")).to_be_disabled()
        await claim.click()
        await expect(console.locator("#ticket-status")).to_have_text("Claimed by you")
        await expect(claim).to_be_hidden()
        await expect(console.locator("#resolve")).to_be_visible()
        await expect(console.locator("#handback")).to_be_visible()
        await expect(ticket).to_have_attribute("data-status", "claimed", timeout=LIVE_TIMEOUT_MS)
        await expect(console.locator("#notice")).to_contain_text("Ticket claimed")

        # The packet: a summary of why, the emotion timeline and the customer's own words.
        summary = console.locator("#packet-summary")
        await expect(summary).to_contain_text(f"Escalated for: {reason.replace('_', ' ')}")
        await expect(summary).to_contain_text("anger")
        await expect(summary).to_contain_text(ANGRY_CUSTOMER[-1])
        await expect(console.locator("#timeline circle.dot")).to_have_count(3)
        transcript = console.locator("#transcript")
        await expect(transcript.locator(".msg-customer .msg-text")).to_have_text(ANGRY_CUSTOMER)
        for text in ANGRY_CUSTOMER:
            assert await transcript.locator(".msg-customer", has_text=text).count() == 1

        # -- the agent answers; the customer sees it ------------------------------------------
        reply_box = console.locator("#reply-input")
        await expect(reply_box).to_be_enabled()
        await reply_box.click()
        await reply_box.press_sequentially(AGENT_REPLY)
        replied_at = time.monotonic()
        await console.locator("#reply-send").click()
        agent_bubble = chat.locator(".msg.msg-agent")
        await expect(agent_bubble).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
        await expect(agent_bubble.locator(".msg-text")).to_have_text(
            AGENT_REPLY, timeout=LIVE_TIMEOUT_MS
        )
        to_customer_s = time.monotonic() - replied_at
        await expect(agent_bubble.locator(".msg-author")).to_have_text("Agent")
        await expect(reply_box).to_have_value("")
        # The console shows the reply once, confirmed by the server's echo.
        mine = transcript.locator(".msg-agent")
        await expect(mine).to_have_count(1)
        await expect(mine.locator(".msg-text")).to_have_text(AGENT_REPLY)
        await expect(mine).not_to_have_attribute("data-state", "sending", timeout=LIVE_TIMEOUT_MS)

        # -- the customer answers back; the console shows it live -----------------------------
        said_at = await type_and_send(chat, CUSTOMER_FOLLOW_UP)
        live = transcript.locator(".msg-customer", has_text=CUSTOMER_FOLLOW_UP)
        await expect(live).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
        to_console_s = time.monotonic() - said_at
        await expect(transcript.locator(".msg-customer .msg-text")).to_have_text(
            [*ANGRY_CUSTOMER, CUSTOMER_FOLLOW_UP]
        )
        # A person holds the conversation: the bot did not answer the follow-up.
        await expect(chat.locator(".msg.msg-customer").last).to_have_attribute("data-state", "sent")
        await expect(chat.locator(".msg.msg-bot")).to_have_count(bot_replies)
        print(
            f"agent reply -> chat page {to_customer_s * 1000:.0f} ms; "
            f"customer message -> console {to_console_s * 1000:.0f} ms"
        )

        chat_shot = tmp_path / "chat-page.png"
        console_shot = tmp_path / "console-page.png"
        await chat.screenshot(path=chat_shot, full_page=True)
        # The console is a one-screen app shell: the viewport is what the agent sees.
        await console.screenshot(path=console_shot)
        print(f"screenshots: {chat_shot} {console_shot}")
        assert not errors, f"JavaScript errors: {errors}"
    finally:
        for context in contexts:
            await context.close()
        if ticket_id:
            await resolve_quietly(platform, ticket_id)
