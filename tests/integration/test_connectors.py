"""Connectors against the stand-in CRM served over real HTTP (uvicorn on a free port)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from cbd.crm_standin import FAILING_ORDER
from cbd.procs import free_port
from services.generation.actions import (
    action_facts,
    needs_colleague,
    plan,
    run_actions,
)
from shared.connectors import DEMO_CONNECTORS, ConnectorClient, load_connectors
from shared.intent import IntentReader

pytestmark = pytest.mark.integration


async def test_order_status_and_tracking_state_only_what_the_system_said(crm_url: str) -> None:
    async with ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=crm_url) as client:
        reading = IntentReader().read("Where is my order A1001? It should have come by now")
        results = await run_actions(client, plan(reading, "Where is my order A1001?", "c-1"))
    assert [r.action for r in results] == ["order_status", "tracking"]
    assert all(r.ok for r in results)
    facts = action_facts(results)
    assert (
        "Order A1001 (blue kettle) is out for delivery; expected delivery today by 18:00." in facts
    )
    assert any("PC123456789" in f for f in facts)
    assert not needs_colleague(results)


async def test_a_failing_system_means_a_colleague_checks_never_a_guess(crm_url: str) -> None:
    async with ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=crm_url) as client:
        result = await client.run("order_status", {"order_id": FAILING_ORDER})
        missing = await client.run("order_status", {"order_id": "Z0000"})
    assert not result.ok
    assert result.error == "HTTPStatusError"
    assert result.facts == {}
    assert needs_colleague([result])
    assert missing.error == "not found"
    assert not needs_colleague([missing])
    assert action_facts([missing]) == [
        "The order system has no record matching the reference the customer gave."
    ]


async def test_an_unreachable_system_is_a_failed_result(tmp_path: Path) -> None:
    spec = load_connectors(DEMO_CONNECTORS)
    async with ConnectorClient(spec, base_url=f"http://127.0.0.1:{free_port()}") as client:
        result = await client.run("tracking", {"order_id": "A1001"})
    assert not result.ok
    assert result.error == "ConnectError"


async def test_refund_and_notification_requests_reach_the_system(crm_url: str) -> None:
    text = "Please refund order A1002, the washing machine never came"
    notice = "Can you tell me when the green kettle is back in stock?"
    reader = IntentReader()
    async with ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=crm_url) as client:
        refund = await run_actions(client, plan(reader.read(text), text, "cust-1"))
        notify = await run_actions(client, plan(reader.read(notice), notice, "cust-1"))
    assert [r.action for r in refund] == ["refund_review"]
    assert refund[0].done == "requested a refund review"
    assert [r.action for r in notify] == ["notify_when_available"]
    assert notify[0].facts["product"] == "green kettle"
    seen = (await asyncio.to_thread(httpx.get, f"{crm_url}/requests")).json()
    assert seen["refunds"][-1]["order_id"] == "A1002"
    assert seen["notifications"][-1]["product"] == "green kettle"


def test_a_connector_file_with_unknown_entities_or_placeholders_is_refused(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nactions:\n  a: {description: d, path: '/x/{order_id}', needs: [sku]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValidationError, match="unknown entities"):
        load_connectors(bad)
    bad.write_text(
        "name: x\nactions:\n  a: {description: d, path: '/x/{order_id}', needs: []}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValidationError, match="not among needs or facts"):
        load_connectors(bad)
