"""Turn latency and throughput through the whole platform, on the embedded servers.

Starts the platform like the end-to-end tests do, then measures, at the customer's side of
the WebSocket:
  - the event pipeline alone: turns routed to a human get a templated notice without the LLM,
    so their latency is six services and five Kafka hops;
  - LLM turns: time to the first streamed text and to the complete reply.
Prints p50/p95/p99, throughput and each service's resident memory.

    make bench                       # defaults
    .venv/bin/python -m bench.turn_latency --pipeline-turns 200 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path

import psutil
import websockets

from cbd.runtime import Platform

HANDOFF_TEXT = "Please let me talk to a real person."


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summary(name: str, values_s: list[float]) -> str:
    """p50/p95/p99/max in milliseconds."""
    ms = [v * 1000 for v in values_s]
    return (
        f"{name:<34} n={len(ms):<4} p50={pct(ms, 50):7.1f} ms  p95={pct(ms, 95):7.1f} ms  "
        f"p99={pct(ms, 99):7.1f} ms  max={max(ms):7.1f} ms"
    )


async def one_conversation(
    url: str, texts: list[str], first: list[float], done: list[float]
) -> None:
    """Send turns one after another on one conversation, timing each at the customer."""
    conversation_id = f"bench-{secrets.token_hex(6)}"
    async with websockets.connect(
        # One customer per conversation, as in real traffic (the edge rate-limits per customer).
        f"{url}/v1/conversations/{conversation_id}/ws?customer_id=b-{conversation_id}"
    ) as ws:
        for text in texts:
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "message", "text": text}))
            got_first = False
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if frame["type"] in ("delta", "reply") and not got_first:
                    first.append(time.perf_counter() - sent)
                    got_first = True
                if frame["type"] == "reply":
                    done.append(time.perf_counter() - sent)
                    break
                if frame["type"] == "error":
                    raise RuntimeError(frame)


async def fresh_conversations(
    url: str, text: str, count: int, first: list[float], done: list[float]
) -> None:
    """One turn in each of `count` new conversations, one after another.

    A conversation handed to a person stays with them (the bot is silent), so each handed-off
    turn needs a conversation of its own.
    """
    for _ in range(count):
        await one_conversation(url, [text], first, done)


async def measure(
    url: str, text: str, turns: int, concurrency: int, *, fresh: bool = False
) -> tuple[list[float], list[float], float]:
    """`turns` turns from `concurrency` customers at once: (first text, reply, wall s)."""
    first: list[float] = []
    done: list[float] = []
    per_worker = max(1, turns // concurrency)
    started = time.perf_counter()
    if fresh:
        jobs = [fresh_conversations(url, text, per_worker, first, done) for _ in range(concurrency)]
    else:
        jobs = [one_conversation(url, [text] * per_worker, first, done) for _ in range(concurrency)]
    await asyncio.gather(*jobs)
    return first, done, time.perf_counter() - started


def rss_mb(platform: Platform) -> dict[str, float]:
    """Resident memory of each service process and its children."""
    out: dict[str, float] = {}
    for name, proc in platform.services.items():
        if proc.pid is None:
            continue
        p = psutil.Process(proc.pid)
        out[name] = sum(x.memory_info().rss for x in [p, *p.children(recursive=True)]) / 2**20
    return out


async def run(args: argparse.Namespace) -> None:
    """Start the platform, measure, print, stop."""
    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform.for_tests(
            Path(tmp),
            extra_env={
                "CBD_GENERATION_MAX_TOKENS": str(args.max_tokens),
                # Every benchmark handoff would otherwise ask the LLM for an agent suggestion,
                # and those would queue ahead of the LLM turns measured afterwards.
                "CBD_GENERATION_ASSIST_SUGGESTIONS": "false",
                # The load comes from one address; the edge's per-address limit would cap it.
                "CBD_INGEST_IP_RATE_PER_MIN": "1000000",
            },
        )
        t0 = time.perf_counter()
        platform.start()
        print(f"platform started in {time.perf_counter() - t0:.1f} s")
        url = platform.url("ingest").replace("http://", "ws://")
        try:
            await measure(url, HANDOFF_TEXT, 6, 3, fresh=True)  # warm-up: connections, caches
            for conc in sorted({1, args.concurrency}):
                first, done, wall = await measure(
                    url, HANDOFF_TEXT, args.pipeline_turns, conc, fresh=True
                )
                print(summary(f"pipeline turn, {conc} customer(s) at once", done))
                print(f"{'':<34} throughput {len(done) / wall:.1f} turns/s")
            # Fresh conversations: the same question asked again in one conversation is a loop,
            # which the escalation policy rightly hands to a person.
            first, done, wall = await measure(
                url, "Hi, can you help me find my order?", args.llm_turns, 1, fresh=True
            )
            print(summary(f"LLM first text ({args.max_tokens} max tok)", first))
            print(summary("LLM complete reply", done))
            for name, mb in rss_mb(platform).items():
                print(f"rss {name:<12} {mb:7.1f} MiB")
        finally:
            platform.stop()


def main() -> None:
    """Entry point of `make bench`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline-turns", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--llm-turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
