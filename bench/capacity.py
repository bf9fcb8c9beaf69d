"""Open-loop capacity: the platform against the simplest chain doing the same job, same run.

Starts the platform on the embedded servers (durable broker included) with a stand-in LLM that
streams a fixed reply at a fixed rate (`bench/fake_llm.py`), and beside it an empty chain of
six aiokafka relays on the same broker (`bench/naive_chain.py`). Then, at each rate, turns are
sent on a fixed schedule whatever happened to the earlier ones (open loop; a closed loop would
slow down with the system and hide its queueing):
  - handoff turns: a new customer asks for a person; six services, five hops, a ticket;
  - bot turns: a new customer asks a question; the reply streams from the stand-in LLM;
  - naive turns: a record through the six relays.
Prints p50/p99 from send to reply at the customer's socket (to the last relay's output for the
chain), their ratio, and CPU milliseconds per turn for each service and server (psutil): all
of it, and beyond what each process burns idle (consumers polling the broker) over the window.

Each rate ends with a floor: the naive chain's CPU per turn plus one MiniLM embedding (the
one piece of work every turn needs for memory's recall, timed here on the project's customer
messages), and the most turns per second that floor allows on this machine's cores. The
platform cannot cost less per turn than that without dropping a hop or the embedding.

    make bench                                              # 10, 30, 100 turns/s, 8 s each
    .venv/bin/python -m bench.capacity --rates 10,30 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cbd.procs import ManagedProcess, free_port, http_ok
from cbd.runtime import Platform
from services.emotion import dataset
from shared.embedding import MiniLmEmbedder

HANDOFF_TEXT = "Please let me talk to a real person."
BOT_TEXT = "Hi, can you help me find my order?"
NAIVE_HOPS = 6


@dataclass
class Window:
    """One rate and kind of turn: latencies of the completed turns, and how many were sent."""

    kind: str
    rate: float
    sent: int
    latencies_s: list[float]
    cpu_ms: dict[str, float]
    above_idle_ms: dict[str, float] | None = None

    @property
    def done(self) -> int:
        """Turns that completed before the drain deadline."""
        return len(self.latencies_s)

    def pct(self, q: float) -> float:
        """The q-th percentile in ms; an incomplete turn counts as infinitely late."""
        if self.sent == 0:
            return float("nan")
        ordered = sorted(self.latencies_s) + [float("inf")] * (self.sent - self.done)
        return 1000 * ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def above_idle(
    before: dict[str, float],
    after: dict[str, float],
    elapsed_s: float,
    idle_per_s: dict[str, float],
    turns: int,
) -> dict[str, float]:
    """CPU ms per turn beyond what each process burns idle over the same time (its polling)."""
    return {
        k: 1000 * (after[k] - before[k] - idle_per_s.get(k, 0.0) * elapsed_s) / max(1, turns)
        for k in after
        if k in before
    }


def embedding_cpu_ms(texts: list[str], rounds: int = 3) -> float:
    """CPU ms of one MiniLM embedding per text, one text per call as memory embeds a turn."""
    embedder = MiniLmEmbedder()
    embedder.embed(texts[:8])
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for text in texts:
            embedder.embed([text])
        best = min(best, (time.process_time() - started) / len(texts))
    return 1000 * best


def cpu_seconds(procs: dict[str, int | None]) -> dict[str, float]:
    """User + system CPU seconds so far of each process and its children."""
    out: dict[str, float] = {}
    for name, pid in procs.items():
        if pid is None:
            continue
        try:
            proc = psutil.Process(pid)
            total = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
            out[name] = total
        except psutil.Error:
            continue
    return out


async def open_loop(
    rate: float, seconds: float, drain_s: float, one: Callable[[int], Awaitable[float | None]]
) -> tuple[int, list[float]]:
    """Start `one(i)` at i / rate for `seconds`; collect the latencies that came back."""
    latencies: list[float] = []
    started = time.monotonic()

    async def timed(i: int) -> None:
        result = await one(i)
        if result is not None:
            latencies.append(result)

    tasks = []
    count = int(rate * seconds)
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(timed(i)))
    await asyncio.wait(tasks, timeout=drain_s)
    for task in tasks:
        task.cancel()
    return count, latencies


def platform_turn(
    platform: Platform, text: str, run: str
) -> Callable[[int], Awaitable[float | None]]:
    """One turn of a new customer over the WebSocket: seconds from send to the complete reply."""
    base = platform.url("ingest").replace("http://", "ws://")

    async def one(i: int) -> float | None:
        conversation_id = f"cap-{run}-{i}"
        url = f"{base}/v1/conversations/{conversation_id}/ws?customer_id=web-{conversation_id}"
        try:
            async with websockets.connect(url, open_timeout=30) as ws:
                sent = time.perf_counter()
                await ws.send(json.dumps({"type": "message", "text": text}))
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "reply":
                        return time.perf_counter() - sent
                    if frame["type"] == "error":
                        return None
        except (OSError, websockets.WebSocketException):
            return None

    return one


class NaiveChain:
    """Six relay processes on topics naive.0 ... naive.6, driven from this process."""

    def __init__(self, platform: Platform, partitions: int) -> None:
        self.platform = platform
        self.bootstrap = platform.stack.env()["CBD_KAFKA_BOOTSTRAP_SERVERS"]
        self.partitions = partitions
        self.topics = [f"naive.{i}" for i in range(NAIVE_HOPS + 1)]
        self.relays: list[ManagedProcess] = []
        self.pending: dict[bytes, tuple[float, asyncio.Future[float]]] = {}
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the topics, start the relays, and the sink reader."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, self.partitions, 1) for t in self.topics])
        finally:
            await admin.close()
        for i in range(NAIVE_HOPS):
            relay = ManagedProcess(
                name=f"naive relay {i}",
                argv=[
                    sys.executable,
                    "-m",
                    "bench.naive_chain",
                    "relay",
                    "--bootstrap",
                    self.bootstrap,
                    "--source",
                    self.topics[i],
                    "--sink",
                    self.topics[i + 1],
                ],
                log_path=self.platform.stack.logs / f"naive-{i}.log",
                ready=lambda: True,
            )
            relay.start()
            self.relays.append(relay)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=False, acks="all"
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            self.topics[-1],
            bootstrap_servers=self.bootstrap,
            group_id="naive-sink",
            enable_auto_commit=True,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        await self.consumer.start()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.consumer is not None
        async for record in self.consumer:
            entry = self.pending.pop(record.key or b"", None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(time.perf_counter() - entry[0])

    def turn(self, run: str) -> Callable[[int], Awaitable[float | None]]:
        """One record through the chain: seconds from send to the sink."""

        async def one(i: int) -> float | None:
            assert self.producer is not None
            key = f"{run}-{i}".encode()
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self.pending[key] = (time.perf_counter(), future)
            await self.producer.send_and_wait(self.topics[0], b"{}", key=key)
            return await future

        return one

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until one record makes it through (every relay has joined its group)."""
        deadline = time.monotonic() + timeout_s
        one = self.turn("warm")
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                await asyncio.wait_for(one(i), 5)
                return
            except TimeoutError:
                continue
        raise RuntimeError("the naive chain never delivered")

    async def stop(self) -> None:
        """Stop the reader, clients and relays."""
        if self.reader is not None:
            self.reader.cancel()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        for relay in self.relays:
            relay.stop()


async def run(args: argparse.Namespace) -> None:
    """Start everything, measure each rate, print, stop."""
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="cbd-bench-capacity-") as tmp:
        llm_port = free_port()
        platform = Platform.for_tests(
            Path(tmp),
            extra_env={
                "CBD_GENERATION_LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
                "CBD_GENERATION_ASSIST_SUGGESTIONS": "false",
                "CBD_INGEST_CUSTOMER_RATE_PER_MIN": "100000",
                "CBD_INGEST_TENANT_RATE_PER_MIN": "10000000",
            },
        )
        platform.stack.with_llm = False
        fake_llm = ManagedProcess(
            name="stand-in LLM",
            argv=[
                sys.executable,
                "-m",
                "bench.fake_llm",
                "--port",
                str(llm_port),
                "--tokens",
                str(args.tokens),
                "--tokens-per-s",
                str(args.tokens_per_s),
            ],
            log_path=Path(tmp) / "logs" / "fake_llm.log",
            ready=lambda: http_ok(f"http://127.0.0.1:{llm_port}/v1/models"),
        )
        chain = NaiveChain(platform, partitions=3)
        embedding_ms = embedding_cpu_ms([ex.text for ex in dataset.load_heldout()])
        print(f"one MiniLM embedding per turn: {embedding_ms:.1f} ms CPU (own heldout messages)")
        t0 = time.perf_counter()
        try:
            platform.stack.start()
            fake_llm.start()
            fake_llm.wait_ready(30)
            platform.start_services()
            await chain.start()
            await chain.wait_ready()
            print(f"platform and naive chain started in {time.perf_counter() - t0:.1f} s")
            procs = {name: p.pid for name, p in platform.services.items()}
            procs.update({p.name.split(" ")[0]: p.pid for p in platform.stack.processes})
            relay_pids = {f"relay{i}": r.pid for i, r in enumerate(chain.relays)}
            # Warm-up: connections, caches, consumer groups.
            kinds = [
                (k, t) for k, t in (("handoff", HANDOFF_TEXT), ("bot", BOT_TEXT)) if k in args.kinds
            ]
            for _, text in kinds:
                await open_loop(
                    2, 2, 30, platform_turn(platform, text, f"warm{secrets.token_hex(2)}")
                )
            # Idle: what each process burns with nobody talking (consumers polling), so each
            # window can also say what a turn costs beyond that floor.
            idle_before, idle_started = cpu_seconds(procs), time.monotonic()
            await asyncio.sleep(args.idle)
            idle_after, idle_s = cpu_seconds(procs), time.monotonic() - idle_started
            idle_per_s = {
                k: (idle_after[k] - idle_before[k]) / idle_s for k in idle_after if k in idle_before
            }
            parts = "  ".join(
                f"{k} {1000 * v:.0f}" for k, v in sorted(idle_per_s.items(), key=lambda kv: -kv[1])
            )
            print(f"idle CPU ms/s {1000 * sum(idle_per_s.values()):6.0f}: {parts}")
            for rate in rates:
                windows = []
                for kind, text in kinds:
                    before, started = cpu_seconds(procs), time.monotonic()
                    sent, lat = await open_loop(
                        rate, args.seconds, args.drain,
                        platform_turn(platform, text, f"{kind}{rate:g}-{secrets.token_hex(2)}"),
                    )  # fmt: skip
                    after, elapsed = cpu_seconds(procs), time.monotonic() - started
                    cpu = {
                        k: 1000 * (after[k] - before[k]) / max(1, len(lat))
                        for k in after
                        if k in before
                    }
                    marginal = above_idle(before, after, elapsed, idle_per_s, len(lat))
                    windows.append(Window(kind, rate, sent, lat, cpu, marginal))
                before = cpu_seconds({**relay_pids, "kafka": procs.get("kafka")})
                sent, lat = await open_loop(
                    rate, args.seconds, args.drain, chain.turn(f"n{rate:g}-{secrets.token_hex(2)}")
                )
                after = cpu_seconds({**relay_pids, "kafka": procs.get("kafka")})
                cpu = {
                    k: 1000 * (after[k] - before[k]) / max(1, len(lat))
                    for k in after
                    if k in before
                }
                windows.append(Window("naive", rate, sent, lat, cpu))
                report(windows)
                floor(windows[-1], embedding_ms)
        finally:
            await chain.stop()
            platform.stop()
            fake_llm.stop()


def report(windows: list[Window]) -> None:
    """Print one rate's figures."""
    naive = next(w for w in windows if w.kind == "naive")
    for w in windows:
        ratio = (
            "" if w.kind == "naive" else f"  p99 ratio to naive {w.pct(99) / naive.pct(99):5.2f}"
        )
        print(
            f"{w.rate:5.0f}/s {w.kind:<8} sent {w.sent:5d} done {w.done:5d}  "
            f"p50 {w.pct(50):8.1f} ms  p99 {w.pct(99):8.1f} ms{ratio}"
        )
        total = sum(w.cpu_ms.values())
        parts = "  ".join(
            f"{k} {v:.1f}" for k, v in sorted(w.cpu_ms.items(), key=lambda kv: -kv[1])
        )
        print(f"          CPU ms/turn {total:6.1f}: {parts}")
        if w.above_idle_ms is not None:
            total = sum(w.above_idle_ms.values())
            parts = "  ".join(
                f"{k} {v:.1f}" for k, v in sorted(w.above_idle_ms.items(), key=lambda kv: -kv[1])
            )
            print(f"          above idle  {total:6.1f}: {parts}")
    sys.stdout.flush()


def floor(naive: Window, embedding_ms: float) -> None:
    """Print the least CPU a turn can cost at this rate, and the rate that allows."""
    chain_ms = sum(naive.cpu_ms.values())
    least = chain_ms + embedding_ms
    cores = psutil.cpu_count() or 1
    print(
        f"          floor       {least:6.1f}: naive chain {chain_ms:.1f} + one embedding "
        f"{embedding_ms:.1f}; at most {1000 * cores / least:.0f} turns/s on {cores} cores"
    )
    sys.stdout.flush()


def main() -> None:
    """Entry point of `make bench`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="10,30,100", help="turns per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of load per rate")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for stragglers")
    parser.add_argument(
        "--kinds",
        type=lambda s: s.split(","),
        default=["handoff", "bot"],
        help="platform turns to run, comma-separated (handoff, bot); the naive chain always runs",
    )
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds of idleness measured before the load"
    )
    parser.add_argument("--tokens", type=int, default=32, help="tokens per stand-in LLM reply")
    parser.add_argument("--tokens-per-s", type=float, default=200.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
