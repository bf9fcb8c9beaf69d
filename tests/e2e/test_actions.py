"""Actions on the tenant's systems, end to end: the stand-in CRM is the order system."""

from __future__ import annotations

import httpx
import pytest

from cbd.crm_standin import FAILING_ORDER
from cbd.runtime import Platform
from tests.e2e.test_generation_replies import ask, conversation
from tests.e2e.test_turn_path import wait_for_rows

pytestmark = pytest.mark.e2e

REPLY_ROWS = (
    "SELECT payload FROM audit.events WHERE conversation_id = $1 AND event_type = 'reply.generated'"
)


async def test_an_order_question_is_answered_from_the_order_system(platform: Platform) -> None:
    conversation_id, customer_id = conversation()
    frames, _ = await ask(platform, conversation_id, customer_id, "Where is my order A1001?")

    reply = frames[-1]
    assert reply["author"] == "bot", reply
    [row] = await wait_for_rows(
        platform.stack.env()["CBD_PG_DSN"], REPLY_ROWS, conversation_id, expect=1
    )
    recorded = row["payload"]["payload"]
    assert recorded["actions_used"] == ["order_status", "tracking"]
    # Whatever the model wrote was read by the care check, whose grounding now has the order
    # system's answer as a source (the check itself, in each reply mode, is tested in the
    # generation tests); a model too slow on a busy machine gives the fallback.
    assert recorded["care_verdict"] is not None


async def test_an_order_system_that_fails_brings_a_colleague_not_a_guess(
    platform: Platform,
) -> None:
    conversation_id, customer_id = conversation()
    frames, _ = await ask(
        platform, conversation_id, customer_id, f"What's the status of order {FAILING_ORDER}?"
    )

    reply = frames[-1]
    assert "colleague" in reply["text"]
    assert {"needs_human", "action_failed"} <= set(reply["flags"])
    dsn = platform.stack.env()["CBD_PG_DSN"]
    [row] = await wait_for_rows(dsn, REPLY_ROWS, conversation_id, expect=1)
    assert row["payload"]["payload"]["actions_used"] == ["order_status:failed", "tracking:failed"]
    # The flagged reply opens a ticket at once.
    await wait_for_rows(
        dsn,
        "SELECT ticket_id FROM escalation.tickets WHERE conversation_id = $1",
        conversation_id,
        expect=1,
    )


def test_the_stand_in_crm_runs_with_the_platform(platform: Platform) -> None:
    url = platform.stack.env()["CBD_GENERATION_CONNECTOR_URL"]
    assert httpx.get(f"{url}/orders/A1001", timeout=5).json()["status"] == "out for delivery"
