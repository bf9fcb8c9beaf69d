"""The care loop end to end: a low-rated bot reply reaches a reviewer's Review page in a real
browser, the review is stored, published and audited, and `cbd evaluate report` counts it; an
agent's resolve with a disposition closes the conversation with its outcome."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, expect
from prometheus_client.parser import text_string_to_metric_families

from cbd.evaluate import compare, load_reviews
from cbd.runtime import Platform
from shared.events import REVIEW_CRITERIA
from tests.e2e.browser import fresh_page
from tests.kit import REPLY_WAIT_S

pytestmark = pytest.mark.e2e


async def poll(dsn: str, sql: str, *args: Any, timeout_s: float = 60.0) -> Any:
    """The first row `sql` returns, polling until it returns one."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            row = await conn.fetchrow(sql, *args)
            if row is not None:
                return row
            assert time.monotonic() < deadline, f"nothing from: {sql} {args}"
            await asyncio.sleep(0.3)
    finally:
        await conn.close()


async def test_a_low_rated_reply_is_reviewed_on_the_review_page(
    platform: Platform, browser: Browser
) -> None:
    dsn = platform.stack.env()["CBD_PG_DSN"]
    conversation_id, customer_id = f"conv-{secrets.token_hex(6)}", f"web-{secrets.token_hex(6)}"
    text = f"Hello, can you tell me about your delivery options? ({secrets.token_hex(3)})"
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=30) as http:
        resp = await http.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"customer_id": customer_id, "text": text},
        )
        assert resp.status_code == 202, resp.text
        bot = await poll(
            dsn,
            "SELECT reply_id, text, variant FROM care.replies "
            "WHERE conversation_id = $1 AND author = 'bot'",
            conversation_id,
            timeout_s=REPLY_WAIT_S,
        )
        rated = await http.post(
            f"/v1/conversations/{conversation_id}/feedback",
            json={"customer_id": customer_id, "rating": 1, "reply_id": str(bot["reply_id"])},
        )
        assert rated.status_code == 202, rated.text
    await poll(dsn, "SELECT 1 FROM care.review_items WHERE reply_id = $1", bot["reply_id"])

    async with fresh_page(browser, f"{platform.url('audit')}/review") as page:
        await page.get_by_label("Reviewer id").fill("reviewer")
        await page.get_by_label("Password").fill("reviewer")
        await page.get_by_role("button", name="Sign in").click()
        item = page.locator(f'#queue button[data-reply-id="{bot["reply_id"]}"]')
        await expect(item).to_be_visible(timeout=10_000)
        await expect(item).to_contain_text("low CSAT")
        await item.click()
        await expect(page.locator("#message")).to_have_text(text)
        await expect(page.locator("#reply")).to_have_text(bot["text"])
        # Blinded: the page never says which prompt variant wrote the reply.
        assert "variant" not in (await page.locator("#item").inner_text()).lower()
        for criterion, score in zip(REVIEW_CRITERIA, (4, 3, 5, 2, 2, 3, 2), strict=True):
            label = page.locator(f'input[name="{criterion}"][value="{score}"]')
            await label.check()
        await page.get_by_label("Wrong tone").check()
        await page.get_by_label("A better reply (optional)").fill(
            "I'd be glad to help. We deliver next day or standard; which suits you?"
        )
        await page.get_by_role("button", name="Submit review").click()
        await expect(page.locator("#notice")).to_have_text("Review saved.")
        await expect(item).to_have_count(0)

    review = await poll(dsn, "SELECT * FROM care.reviews WHERE reply_id = $1", bot["reply_id"])
    scores = (
        review["scores"] if isinstance(review["scores"], dict) else json.loads(review["scores"])
    )
    assert scores["understands_emotion"] == 2
    assert review["tags"] == ["wrong_tone"]
    audited = await poll(
        dsn,
        "SELECT payload FROM audit.events WHERE event_type = 'review.submitted' "
        "AND conversation_id = $1",
        conversation_id,
    )
    payload = audited["payload"]
    payload = payload if isinstance(payload, dict) else json.loads(payload)
    assert payload["payload"]["reviewer_id"] == "reviewer"
    # The evaluation reads it back under the reply's variant.
    ratings = [r for r in await load_reviews(dsn) if r.item == str(bot["reply_id"])]
    assert [r.variant for r in ratings] == [bot["variant"]]
    row = compare(ratings, resamples=100).rows[REVIEW_CRITERIA.index("understands_emotion")]
    n = row.care_n if bot["variant"] == "care" else row.baseline_n
    assert n == 1


async def test_an_agent_resolve_with_a_disposition_closes_the_conversation(
    platform: Platform,
) -> None:
    dsn = platform.stack.env()["CBD_PG_DSN"]
    conversation_id, customer_id = f"conv-{secrets.token_hex(6)}", f"web-{secrets.token_hex(6)}"
    async with httpx.AsyncClient(base_url=platform.url("ingest"), timeout=20) as http:
        resp = await http.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"customer_id": customer_id, "text": "I want to talk to a human agent now!"},
        )
        assert resp.status_code == 202, resp.text
    async with httpx.AsyncClient(base_url=platform.url("escalation"), timeout=20) as agent:
        login = await agent.post("/v1/agent/login", json={"agent_id": "agent", "password": "agent"})
        agent.headers["Authorization"] = f"Bearer {login.json()['token']}"
        for _ in range(150):
            tickets = (await agent.get("/v1/agent/queue")).json()["tickets"]
            mine = [t for t in tickets if t["conversation_id"] == conversation_id]
            if mine:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("no ticket was opened")
        ticket = mine[0]["ticket_id"]
        assert (await agent.post(f"/v1/agent/tickets/{ticket}/claim")).status_code == 200
        bad = await agent.post(
            f"/v1/agent/tickets/{ticket}/resolve", json={"disposition": "Not A Code"}
        )
        # Escalation's routes are FastAPI now: an invalid body is 422 naming the field.
        assert (bad.status_code, bad.json()["error"]) == (422, "invalid_request"), bad.text
        assert [d["field"] for d in bad.json()["details"]] == ["disposition"]
        done = await agent.post(
            f"/v1/agent/tickets/{ticket}/resolve", json={"disposition": "resolved"}
        )
        assert done.status_code == 200, done.text
    row = await poll(
        dsn,
        "SELECT * FROM care.conversations WHERE conversation_id = $1 AND closed_at IS NOT NULL",
        conversation_id,
    )
    assert row["close_reason"] == "agent_resolved"
    assert row["disposition"] == "resolved"
    assert row["agent_id"] == "agent"
    assert row["escalated"] is True
    assert row["fcr_candidate"] is True
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(f"{platform.url('audit')}/metrics")).text
    closes = [
        s
        for family in text_string_to_metric_families(metrics)
        if family.name == "cbd_conversations_closed"
        for s in family.samples
        if s.name == "cbd_conversations_closed_total"
    ]
    assert any(
        s.labels["agent"] == "agent"
        and s.labels["reason"] == "agent_resolved"
        and s.labels["contained"] == "false"
        and s.value >= 1
        for s in closes
    ), closes
