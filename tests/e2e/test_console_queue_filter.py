"""The agent console's queue filter, in a real browser against a stand-in escalation API.

The page is the shipped console.html under the Content-Security-Policy the service sends; the
API is answered by the test (Playwright routes), so what is checked is the page's side: the
filter asks the server for one skill queue (or the agent's own), lists what it gets, keeps every
queue it has seen on offer, and shows each ticket's queue.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.async_api import Browser, Route, expect

from shared.http import content_security_policy
from tests.e2e.browser import record_errors

pytestmark = pytest.mark.e2e

CONSOLE = (
    Path(__file__).resolve().parents[2] / "services" / "escalation" / "static" / "console.html"
)
ORIGIN = "http://console.test"


def _ticket(n: int, skill: str, intent: str) -> dict[str, object]:
    return {
        "ticket_id": f"00000000-0000-0000-0000-00000000000{n}",
        "conversation_id": f"conv-{n}",
        "customer_id": f"customer-{n}",
        "status": "queued",
        "severity": "medium",
        "summary": f"ticket {n}",
        "reasons": [{"code": "repeat_contact", "detail": "third time"}],
        "channel": "web",
        "skill": skill,
        "intent": intent,
        "waiting_seconds": 30,
        "created_at": "2026-11-30T12:00:00+00:00",
    }


TICKETS = [_ticket(1, "billing", "billing"), _ticket(2, "technical", "technical")]


async def test_the_queue_filters_by_skill_queue_on_the_server(browser: Browser) -> None:
    asked: list[dict[str, list[str]]] = []
    html = CONSOLE.read_text(encoding="utf-8")

    async def answer(route: Route) -> None:
        url = urlparse(route.request.url)
        if url.path == "/console":
            await route.fulfill(
                status=200,
                body=html,
                headers={
                    "Content-Type": "text/html; charset=utf-8",
                    "Content-Security-Policy": content_security_policy(html),
                },
            )
        elif url.path == "/v1/agent/login":
            await route.fulfill(json={"token": "t", "agent_id": "agent"})
        elif url.path == "/v1/agent/queue":
            query = parse_qs(url.query)
            asked.append(query)
            wanted = query.get("skill", [])
            tickets = [t for t in TICKETS if not wanted or t["skill"] in wanted]
            if query.get("mine") == ["true"]:
                tickets = TICKETS[:1]
            await route.fulfill(body=json.dumps({"tickets": tickets}))
        else:
            await route.fulfill(status=404, json={"error": "not_found", "message": "n/a"})

    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    record_errors(page, errors)
    await context.route(f"{ORIGIN}/**", answer)
    try:
        await page.goto(f"{ORIGIN}/console")
        await page.fill("#agent-id", "agent")
        await page.fill("#password", "agent")
        await page.click("#login-submit")
        queue = page.locator("#queue > .ticket")
        await expect(queue).to_have_count(2)
        await expect(page.locator(".ticket-skill")).to_have_text(["Billing", "Technical"])
        options = page.locator("#queue-filter option")
        await expect(options).to_have_text(
            ["All queues", "My queues", "Billing queue", "Technical queue"]
        )

        await page.select_option("#queue-filter", "technical")
        await expect(queue).to_have_count(1)
        await expect(page.locator("#queue-count")).to_have_text("1")
        assert {"skill": ["technical"]} in asked
        # Queues seen before stay on offer while the list is narrowed.
        await expect(options).to_have_count(4)

        await page.select_option("#queue-filter", "mine")
        await expect(queue).to_have_count(1)
        assert {"mine": ["true"]} in asked

        await page.select_option("#queue-filter", "")
        await expect(queue).to_have_count(2)
        assert errors == []
    finally:
        await context.close()
