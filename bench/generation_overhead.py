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
is left out here. The pair runs in mode `llm` (token streaming), so it measures the same
thing as before the care check existed.

The care check (mode `llm_checked`, the default) releases text a sentence at a time, once the
sentence has ended and passed. Its cost is measured on the very pieces the model streamed in
the direct run, fed through the checked stream: the time the check spends on the first ended
sentence before releasing it (what it adds to the first released sentence; regeneration
excluded), the end-of-reply checks (relevance embeds the reply), and how long after the
first token the model ends its first sentence (what releasing by sentence costs, which is
the model's speed, not the check's).

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
from services.generation.care import CheckedStream
from services.generation.guardrails import sentence_ends
from services.generation.handlers import GenerationHandlers
from services.generation.settings import PACKAGE_DIR, GenerationSettings, ReplyMode
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
from shared.llm import ChatClient
from shared.topics import Topic


class TimingBus:
    """Stands in for Kafka: notes when each delta and the final reply are published."""

    def __init__(self) -> None:
        self.deltas: list[float] = []
        self.final: float | None = None
        self.tokens = 0

    async def publish(self, event: Envelope, /, *, confirm: bool = True) -> None:
        now = time.perf_counter()
        topic = Topic.for_event(event)
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


async def direct(
    http: httpx.AsyncClient, body: dict[str, Any], pieces: list[str] | None = None
) -> tuple[float, float | None]:
    """(time to first token s, tokens/s) of one streamed completion, no service code; the
    streamed pieces go into `pieces` with their arrival times in `STAMPS`."""
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
                if pieces is not None:
                    pieces.append(content)
                    STAMPS.append(stamps[-1] - started)
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


STAMPS: list[float] = []


def first_sentence_s(pieces: list[str]) -> float | None:
    """Seconds from the first token to the piece that ends the first sentence."""
    text = ""
    for piece, stamp in zip(pieces, STAMPS, strict=True):
        text += piece
        if next(sentence_ends(text), None) is not None:
            return stamp - STAMPS[0]
    return None


def checked_costs(
    handlers: GenerationHandlers, event: TurnRoutedEvent, pieces: list[str]
) -> tuple[float | None, float | None, float]:
    """(wall and CPU seconds the check spent on the first ended sentence, seconds of the end
    checks)."""
    prompt = handlers.prompts.build(event.payload, Variant.CARE)
    guard = CheckedStream(handlers.rails, handlers.care.for_turn(event.payload, prompt))
    for piece in pieces:
        guard.feed(piece)
        if guard.stopped:
            break
    started = time.perf_counter()
    guard.finish()
    first = guard.check_s[0] if guard.check_s else None
    first_cpu = guard.check_cpu_s[0] if guard.check_cpu_s else None
    return first, first_cpu, time.perf_counter() - started


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
        reply_mode=ReplyMode.LLM,
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
    check_first: list[float] = []
    check_first_cpu: list[float] = []
    check_end: list[float] = []
    sentence_wait: list[float] = []
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
            pieces: list[str] = []
            STAMPS.clear()
            d_first, d_rate = await direct(http, body, pieces)
            await direct(http, body | {"max_tokens": 1})
            s_first, s_rate = await via_service(handlers, bus, event)
            if i < 2:
                continue  # warm-up: connections, imports, the first prompts
            first_check, first_cpu, end_check = checked_costs(handlers, event, pieces)
            if first_check is not None and first_cpu is not None:
                check_first.append(first_check)
                check_first_cpu.append(first_cpu)
            check_end.append(end_check)
            wait = first_sentence_s(pieces)
            if wait is not None:
                sentence_wait.append(wait)
            ttft_d.append(d_first)
            ttft_s.append(s_first)
            extra.append(s_first - d_first)
            if d_rate and s_rate:
                rate_d.append(d_rate)
                rate_s.append(s_rate)
    await client.aclose()
    for name, values, unit, scale in (
        ("TTFT direct (model server)", ttft_d, "ms", 1000),
        ("TTFT via generation service", ttft_s, "ms", 1000),
        ("service overhead on TTFT (pairwise)", extra, "ms", 1000),
        ("  of which prompt building", build, "ms", 1000),
        ("tokens/s direct", rate_d, "tok/s", 1.0),
        ("tokens/s via generation service", rate_s, "tok/s", 1.0),
        ("care check on the first sentence", check_first, "ms", 1000),
        ("  the same, CPU time", check_first_cpu, "ms", 1000),
        ("care check at the end (relevance)", check_end, "ms", 1000),
        ("first token -> first sentence ends", sentence_wait, "ms", 1000),
    ):
        print(line(name, values, unit, scale))


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
