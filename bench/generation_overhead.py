"""What the generation service adds over calling the LLM server directly.

Starts the embedded servers (the local llama.cpp model server among them) and, for the same
prompts, measures:
  - direct: a streamed chat completion straight from the model server (httpx, no service
    code): time to first token and tokens per second;
  - via the service: a routed turn handed to the generation handler (prompt building with
    playbook, knowledge retrieval and memory, the client with its breaker and retries, the
    streaming guardrails, delta batching) up to the first `reply.delta` it publishes, and
    tokens per second of the deltas.
Both see the same prompt at temperature 0, and the model server's prompt cache is warmed
before each pair, so the difference is the service's own work. The Kafka hops around the
service are measured by `bench.turn_latency`; the ownership fence (one Redis GET per slice)
is left out here.

    make bench
    .venv/bin/python -m bench.generation_overhead --turns 60 --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import yaml

from bench.turn_latency import pct
from cbd.stack import EmbeddedStack, StackPorts
from services.generation.handlers import GenerationHandlers
from services.generation.llm import ChatClient
from services.generation.settings import PACKAGE_DIR, GenerationSettings
from services.generation.variants import Variant
from shared.events import (
    Channel,
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    Envelope,
    RouteTarget,
    RoutingDecision,
    TurnReceived,
    TurnReceivedEvent,
    TurnRouted,
    TurnRoutedEvent,
)
from shared.kafka import EventBus
from shared.topics import Topic


class TimingBus:
    """Stands in for Kafka: notes when each delta and the final reply are published."""

    def __init__(self) -> None:
        self.deltas: list[float] = []
        self.final: float | None = None
        self.tokens = 0

    async def publish(self, topic: Topic, event: Envelope, *, confirm: bool = True) -> None:
        now = time.perf_counter()
        if topic is Topic.REPLY_DELTA:
            self.deltas.append(now)
        elif topic is Topic.REPLY_GENERATED:
            self.final = now
            self.tokens = getattr(event.payload, "tokens", 0) or 0


def routed_turn(text: str, label: EmotionLabel) -> TurnRoutedEvent:
    """A bot-routed turn as escalation would publish it."""
    message = CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=datetime.now(UTC))
    received = TurnReceivedEvent.create(
        conversation_id=f"bench-{uuid.uuid4().hex[:8]}",
        customer_id="bench",
        channel=Channel.WEB,
        payload=TurnReceived(message=message),
    )
    scores = dict.fromkeys(EmotionLabel, 0.0)
    scores[label] = 1.0
    payload = TurnRouted(
        message=message,
        emotion=EmotionAnalysis(
            label=label, scores=scores, sentiment=0.0, intensity=0.5, model="bench"
        ),
        context=ConversationContext(),
        route=RoutingDecision(target=RouteTarget.BOT, policy="bench"),
    )
    return received.derive(TurnRoutedEvent, payload)


async def direct(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, float | None]:
    """(time to first token s, tokens/s) of one streamed completion, no service code."""
    started = time.perf_counter()
    stamps: list[float] = []
    async with http.stream("POST", "/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            chunk = json.loads(line[5:])
            content = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content")
            if content:
                stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError("the model server streamed no text")
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return stamps[0] - started, rate


async def via_service(
    handlers: GenerationHandlers, bus: TimingBus, event: TurnRoutedEvent
) -> tuple[float, float | None]:
    """(time to first published delta s, tokens/s) of one routed turn through the handler."""
    bus.deltas, bus.final, bus.tokens = [], None, 0
    started = time.perf_counter()
    await handlers.on_turn_routed(event)
    if not bus.deltas:
        raise RuntimeError("the service streamed no text (fallback?)")
    span = bus.deltas[-1] - bus.deltas[0]
    rate = (bus.tokens - 1) / span if bus.tokens > 1 and span > 0 else None
    return bus.deltas[0] - started, rate


def line(name: str, values: list[float], unit: str, scale: float = 1.0) -> str:
    """p50 and p99 of one measurement."""
    v = [x * scale for x in values]
    return f"{name:<40} n={len(v):<4} p50={pct(v, 50):8.2f} {unit}  p99={pct(v, 99):8.2f} {unit}"


async def measure(base_url: str, model: str, turns: int, max_tokens: int) -> None:
    """Alternate direct and via-service runs over the scripted questions; print the figures."""
    scenarios = yaml.safe_load((PACKAGE_DIR / "data" / "scenarios.yaml").read_text())
    questions = [(s["text"], EmotionLabel(s["emotion"])) for s in scenarios["scenarios"]]
    settings = GenerationSettings(
        llm_base_url=base_url,
        llm_model=model,
        max_tokens=max_tokens,
        temperature=0.0,
        delta_flush_ms=0,
        first_token_timeout_s=60,
    )
    client = ChatClient(base_url, model, first_token_timeout_s=60, total_timeout_s=120)
    bus = TimingBus()
    handlers = GenerationHandlers(cast(EventBus, bus), client, settings)
    ttft_d: list[float] = []
    ttft_s: list[float] = []
    rate_d: list[float] = []
    rate_s: list[float] = []
    extra: list[float] = []
    build: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        for i in range(turns + 2):
            text, label = questions[i % len(questions)]
            event = routed_turn(text, label)
            t0 = time.perf_counter()
            prompt = handlers.prompts.build(event.payload, Variant.CARE)
            build.append(time.perf_counter() - t0)
            body = {
                "model": model,
                "messages": [{"role": m.role, "content": m.content} for m in prompt.messages],
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "top_p": settings.top_p,
                "stream": True,
            }
            # Put the model server in the same state before each run: this prompt evaluated
            # and cached, nothing generated after it (a cache that still holds a previous
            # reply's tokens costs llama.cpp 30-50 ms more). The difference between the two
            # runs is then the service's own work.
            await direct(http, body | {"max_tokens": 1})
            d_first, d_rate = await direct(http, body)
            await direct(http, body | {"max_tokens": 1})
            s_first, s_rate = await via_service(handlers, bus, event)
            if i < 2:
                continue  # warm-up: connections, imports, the first prompts
            ttft_d.append(d_first)
            ttft_s.append(s_first)
            extra.append(s_first - d_first)
            if d_rate and s_rate:
                rate_d.append(d_rate)
                rate_s.append(s_rate)
    await client.aclose()
    print(line("TTFT direct (model server)", ttft_d, "ms", 1000))
    print(line("TTFT via generation service", ttft_s, "ms", 1000))
    print(line("service overhead on TTFT (pairwise)", extra, "ms", 1000))
    print(line("  of which prompt building", build, "ms", 1000))
    print(line("tokens/s direct", rate_d, "tok/s"))
    print(line("tokens/s via generation service", rate_s, "tok/s"))


async def run(args: argparse.Namespace) -> None:
    """Start the embedded servers (or use --llm-url), measure, print, stop."""
    if args.llm_url:
        await measure(args.llm_url, args.model, args.turns, args.max_tokens)
        return
    with tempfile.TemporaryDirectory() as tmp:
        stack = EmbeddedStack(Path(tmp), ports=StackPorts.random(), durable=False)
        t0 = time.perf_counter()
        stack.start()
        print(f"servers started in {time.perf_counter() - t0:.1f} s")
        env = stack.env()
        try:
            await measure(
                env["CBD_GENERATION_LLM_BASE_URL"],
                env["CBD_GENERATION_LLM_MODEL"],
                args.turns,
                args.max_tokens,
            )
        finally:
            stack.stop()


def main() -> None:
    """Entry point of `make bench`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--llm-url", help="an already running OpenAI-compatible server")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
