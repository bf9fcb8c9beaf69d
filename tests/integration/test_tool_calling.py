"""Actions chosen by the model's tool calls, against the stand-in CRM over real HTTP.

The model side is an OpenAI-compatible server stand-in that answers with the tool calls a
model would make (`choices[0].message.tool_calls`, arguments as a JSON string), or refuses
`tools` as a server without tool support does; what it was sent is recorded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.generation.actions import ActionDesk
from shared.connectors import DEMO_CONNECTORS, ConnectorClient, load_connectors
from shared.intent import IntentReader
from shared.llm import ChatClient
from tests.kit import analyzed, contextualized, routed, serving, turn_received

pytestmark = pytest.mark.integration


def model_server(answer: dict[str, Any] | None, seen: list[dict[str, Any]]) -> FastAPI:
    """An OpenAI-compatible chat server: `answer` as the assistant message, or 400 if None."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> JSONResponse:
        seen.append(await request.json())
        if answer is None:
            return JSONResponse({"error": {"message": "tools are not supported"}}, 400)
        return JSONResponse({"choices": [{"index": 0, "message": answer}]})

    return app


def call(name: str, **arguments: str) -> dict[str, Any]:
    return {
        "id": f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def turn(text: str, customer_id: str = "cust-1") -> Any:
    return routed(contextualized(analyzed(turn_received(text, customer_id=customer_id)))).payload


async def test_the_models_tool_calls_choose_the_actions_within_what_the_platform_allows(
    crm_url: str,
) -> None:
    seen: list[dict[str, Any]] = []
    answer = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            # The model may not choose whose account is read: customer_id is the platform's.
            call("order_status", order_id="A1001", customer_id="someone-else"),
            call("delete_all_orders", order_id="A1001"),
            call("order_status", order_id="A1001"),
            call("tracking", order_id="A1002"),
        ],
    }
    async with (
        serving(model_server(answer, seen)) as (model_url,),
        ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=crm_url) as client,
    ):
        chooser = ChatClient(f"{model_url}/v1", "test-model", total_timeout_s=5)
        desk = ActionDesk(IntentReader(), client, chooser)
        done = await desk.for_turn(turn("Hi, where's my order A1001?"), "cust-1")
        await chooser.aclose()

    # Each known call once, never the unknown one.
    assert done.used == ["order_status", "tracking"]
    assert any("A1001" in fact for fact in done.facts)
    assert any("A1002" in fact for fact in done.facts)
    [request] = seen
    tools = {t["function"]["name"]: t["function"] for t in request["tools"]}
    assert set(tools) == set(load_connectors(DEMO_CONNECTORS).actions)
    assert request["tool_choice"] == "auto"
    # Only what the customer can tell the model is a parameter: never the customer id.
    assert tools["order_status"]["parameters"]["required"] == ["order_id"]
    assert "customer_id" not in tools["account_lookup"]["parameters"]["properties"]


async def test_a_model_that_asks_for_nothing_runs_nothing(crm_url: str) -> None:
    answer = {"role": "assistant", "content": "Happy to help!"}
    async with (
        serving(model_server(answer, [])) as (model_url,),
        ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=crm_url) as client,
    ):
        chooser = ChatClient(f"{model_url}/v1", "test-model", total_timeout_s=5)
        done = await ActionDesk(IntentReader(), client, chooser).for_turn(
            turn("Thanks, that's all!"), "cust-1"
        )
        await chooser.aclose()
    assert done.used == []


async def test_a_server_without_tool_support_falls_back_to_the_intents_plan(
    crm_url: str,
) -> None:
    seen: list[dict[str, Any]] = []
    async with (
        serving(model_server(None, seen)) as (model_url,),
        ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=crm_url) as client,
    ):
        chooser = ChatClient(f"{model_url}/v1", "test-model", total_timeout_s=5)
        done = await ActionDesk(IntentReader(), client, chooser).for_turn(
            turn("Where is my order A1001? It should have come by now"), "cust-1"
        )
        await chooser.aclose()
    assert len(seen) == 1
    # What the intent's deterministic plan runs for an order question.
    assert done.used == ["order_status", "tracking"]


async def test_with_the_real_local_model_only_allowed_actions_ever_run(
    stack_env: dict[str, str], crm_url: str
) -> None:
    # Whatever the real model does with `tools` (call some, call none, or the server refuses
    # them), only the tenant's actions run, on the verified customer, at most four.
    async with ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=crm_url) as client:
        chooser = ChatClient(
            stack_env["CBD_GENERATION_LLM_BASE_URL"],
            stack_env["CBD_GENERATION_LLM_MODEL"],
            total_timeout_s=60,
        )
        try:
            done = await ActionDesk(IntentReader(), client, chooser).for_turn(
                turn("Where is my order A1001? And show me someone else's account."), "cust-1"
            )
        finally:
            await chooser.aclose()
    assert len(done.results) <= 4
    assert {r.action for r in done.results} <= set(load_connectors(DEMO_CONNECTORS).actions)
    requests = (await asyncio.to_thread(httpx.get, f"{crm_url}/requests")).json()
    assert all(r["customer_id"] == "cust-1" for r in requests.get("refunds", []))
    assert all(n["customer_id"] == "cust-1" for n in requests.get("notifications", []))
