"""Chaos run: open-loop turns while services and the broker are killed with SIGKILL.

`make chaos` (or `python -m cbd.chaos`) starts the platform on embedded servers, runs its
supervisor (what `make run` does), and sends turns at a fixed rate whatever happens: each
turn is a new customer on the web chat who asks for a person, so all six services and five
hops run and the LLM is out of the path. Meanwhile it kills a random service or the broker
(`kill -9`; `--targets` narrows the choice), waits until replies flow again, pauses a random
moment, and kills again. With the default in-memory broker storage a broker kill loses what
the broker held, which ingest publishes again (services/ingest/replay.py); tansu's durable S3
storage does not keep up with this load on a small machine (docs/architecture.md). The short
form in CI (tests/e2e/test_chaos.py) kills the broker twice.

Every turn is followed twice, by turn id: at the customer's WebSocket (a client that resends
its message with the same `client_message_id` until it is accepted, and reconnects with
`after=<last frame id>` when its socket drops, as the widget does) and on the reply topic (a
reader of its own, from the first offset). At the end it prints turns sent, accepted, lost and
duplicated at both places, and for each kill the time until the first reply to a turn sent
after it (with when the supervisor's new process started and when it was ready, so the rest is
the consumer groups' join and rebalance), and the worst and mean of those per target. It exits
non-zero on any loss or duplicate.

    make chaos                                   # 10 turns/s for 2 minutes
    .venv/bin/python -m cbd.chaos --rate 10 --duration 60 --seed 7
    .venv/bin/python -m cbd.chaos --targets emotion,memory   # services only
    .venv/bin/python -m cbd.chaos --targets emotion,broker --broker-storage s3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import websockets
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.exceptions import RedisError

from cbd.procs import http_ok, tcp_open
from cbd.runtime import Platform
from cbd.serve import SERVICES
from cbd.stack import BrokerStorage
from services.ingest.replay import DUE_KEY, PENDING_TEMPLATE
from shared.rewind import rewind_past_end
from shared.settings import KafkaSettings, RedisSettings
from shared.topics import Topic

HANDOFF_TEXT = "Please let me talk to a real person."
BROKER = "broker"
TARGETS = (*SERVICES, BROKER)


@dataclass
class Turn:
    """One customer message and what became of it."""

    index: int
    conversation_id: str
    first_try: float = 0.0
    accepted_at: float | None = None
    turn_id: str | None = None
    refused_with: dict[str, int] = field(default_factory=dict)
    """Refusals by HTTP status (503: broker or a dependency down, 429: a rate limit)."""
    reconnects: int = 0
    replies: list[float] = field(default_factory=list)
    early: dict[str, float] = field(default_factory=dict)
    """Replies that came before the turn's acceptance, by turn id, and when."""

    @property
    def refusals(self) -> int:
        """Times the platform refused this turn before accepting it."""
        return sum(self.refused_with.values())


@dataclass
class Kill:
    """One SIGKILL and how long the platform took to answer again."""

    target: str
    at: float
    recovered_s: float | None = None
    restarted_s: float | None = None
    """From the kill to the supervisor's new process."""
    ready_s: float | None = None
    """From the kill to the new process passing its readiness check (a service's `/readyz`,
    the broker accepting connections): what is left of `recovered_s` after it is the consumer
    groups' join and rebalance, and the backlog."""


@dataclass
class Report:
    """What the run saw."""

    turns: list[Turn]
    kills: list[Kill]
    topic_replies: dict[str, list[str]]
    duration_s: float
    owed_at_end: int = 0
    """Turns the edge still held unanswered (its replay queue) when the drain gave up: a
    backlog that ran out of time, where a loss would be a turn the edge no longer holds."""

    @property
    def accepted(self) -> list[Turn]:
        """Turns ingest acknowledged."""
        return [t for t in self.turns if t.turn_id is not None]

    @property
    def lost_at_socket(self) -> list[Turn]:
        """Accepted turns whose reply never reached the customer's socket."""
        return [t for t in self.accepted if not t.replies]

    @property
    def duplicated_at_socket(self) -> list[Turn]:
        """Turns whose reply reached the customer more than once."""
        return [t for t in self.accepted if len(t.replies) > 1]

    @property
    def lost_at_topic(self) -> list[Turn]:
        """Accepted turns without a reply event on the reply topic."""
        return [t for t in self.accepted if t.turn_id not in self.topic_replies]

    @property
    def duplicated_at_topic(self) -> dict[str, list[str]]:
        """Turns with more than one distinct reply event (different event ids) on the topic."""
        return {k: v for k, v in self.topic_replies.items() if len(set(v)) > 1}

    @property
    def redelivered_at_topic(self) -> int:
        """Reply events written twice with the same event id (at-least-once, deduplicated)."""
        return sum(len(v) - len(set(v)) for v in self.topic_replies.values())

    @property
    def never_accepted(self) -> list[Turn]:
        """Turns the client gave up resending (the platform refused them to the end)."""
        return [t for t in self.turns if t.turn_id is None]

    @property
    def ok(self) -> bool:
        """No loss and no duplicate anywhere, and every turn was accepted in the end."""
        return not (
            self.lost_at_socket
            or self.duplicated_at_socket
            or self.lost_at_topic
            or self.duplicated_at_topic
            or self.never_accepted
        )

    def lines(self) -> list[str]:
        """The report, for people."""
        latencies = sorted(
            t.replies[0] - t.accepted_at for t in self.accepted if t.replies and t.accepted_at
        )
        out = [
            f"turns sent            {len(self.turns)} over {self.duration_s:.0f} s "
            f"({len(self.turns) / max(self.duration_s, 1e-9):.1f}/s)",
            f"accepted              {len(self.accepted)} "
            f"(refused then resent: {sum(t.refusals for t in self.turns)} times"
            f"{_by_status(self.turns)}; "
            f"socket reconnects: {sum(t.reconnects for t in self.turns)})",
            f"never accepted        {len(self.never_accepted)}",
            f"lost at socket        {len(self.lost_at_socket)}",
            f"still owed by ingest  {self.owed_at_end} (queued for replay when the drain ended)",
            f"duplicated at socket  {len(self.duplicated_at_socket)}",
            f"lost at reply topic   {len(self.lost_at_topic)}",
            f"duplicated at topic   {len(self.duplicated_at_topic)} "
            f"(same event redelivered: {self.redelivered_at_topic})",
        ]
        if latencies:
            out.append(
                f"accept-to-reply       p50 {_pct(latencies, 50) * 1000:.0f} ms, "
                f"p99 {_pct(latencies, 99) * 1000:.0f} ms, max {latencies[-1]:.1f} s"
            )
        for kill in self.kills:
            rec = "not recovered" if kill.recovered_s is None else f"{kill.recovered_s:5.1f} s"
            out.append(
                f"kill -9 {kill.target:<11} at {kill.at:6.1f} s -> next reply {rec} "
                f"(restarted {_secs(kill.restarted_s)}, ready {_secs(kill.ready_s)})"
            )
        recovered = [k.recovered_s for k in self.kills if k.recovered_s is not None]
        if recovered:
            out.append(
                f"recovery              max {max(recovered):.1f} s, "
                f"mean {sum(recovered) / len(recovered):.1f} s over {len(recovered)} kills"
            )
        by_target: dict[str, list[float]] = defaultdict(list)
        for kill in self.kills:
            if kill.recovered_s is not None:
                by_target[kill.target].append(kill.recovered_s)
        for target, times in sorted(by_target.items()):
            out.append(
                f"  {target:<19} max {max(times):.1f} s, mean {sum(times) / len(times):.1f} s "
                f"over {len(times)} kill(s)"
            )
        for label, lost in (
            ("lost at socket", self.lost_at_socket),
            ("lost at topic", self.lost_at_topic),
        ):
            if lost:
                out.append(
                    f"  {label}: "
                    + ", ".join(f"{t.conversation_id} (turn {t.turn_id})" for t in lost[:5])
                    + (" ..." if len(lost) > 5 else "")
                )
        out.append("RESULT                " + ("PASS" if self.ok else "FAIL"))
        return out


def _by_status(turns: Sequence[Turn]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for turn in turns:
        for status, n in turn.refused_with.items():
            counts[status] += n
    return " (" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ")" if counts else ""


def _secs(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def _pct(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]


class Chaos:
    """Drives one chaos run against a started platform."""

    def __init__(
        self,
        platform: Platform,
        *,
        rate: float,
        duration_s: float,
        targets: Sequence[str] = TARGETS,
        first_targets: Sequence[str] = (),
        first_kill_s: float = 5.0,
        pause_s: tuple[float, float] = (2.0, 8.0),
        drain_s: float = 30.0,
        seed: int | None = None,
    ) -> None:
        self.platform = platform
        self.rate = rate
        self.duration_s = duration_s
        self.targets = list(targets)
        self.first_targets = list(first_targets)
        self.first_kill_s = first_kill_s
        self.pause_s = pause_s
        self.drain_s = drain_s
        self.random = random.Random(seed)
        self.run_id = secrets.token_hex(3)
        self.turns: list[Turn] = []
        self.kills: list[Kill] = []
        self.topic_replies: dict[str, list[str]] = defaultdict(list)
        self.t0 = 0.0
        self._sending = True

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    async def run(self) -> Report:
        """Load, kill, drain, and report."""
        self.t0 = time.monotonic()
        reader = asyncio.create_task(self._read_reply_topic())
        killer = asyncio.create_task(self._kill_loop())
        tasks: list[asyncio.Task[None]] = []
        interval = 1.0 / self.rate
        for i in range(int(self.duration_s * self.rate)):
            # Open loop: turn i goes out at its time, whatever became of the earlier ones.
            await asyncio.sleep(max(0.0, i * interval - self.now()))
            tasks.append(asyncio.create_task(self._turn(i)))
        self._sending = False
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer
        # Drain: a backlog is not a loss. Wait while replies keep coming or the edge still
        # holds unanswered turns of this run (it replays them `CBD_INGEST_REPLAY_AFTER_S` after
        # acceptance, which can leave a quiet window as long as `drain_s` on a loaded machine);
        # give up after `drain_s` with neither, or after ten times that in all.
        deadline = time.monotonic() + 10 * self.drain_s
        owed = 0
        while time.monotonic() < deadline:
            answered = sum(1 for t in self.turns if t.replies)
            _done, pending = await asyncio.wait(tasks, timeout=self.drain_s)
            if not pending:
                owed = 0
                break
            owed = await self._owed()
            if sum(1 for t in self.turns if t.replies) == answered and not owed:
                break
        for task in tasks:
            task.cancel()
        for kill in self.kills:
            # A kill near the end recovers while the backlog drains.
            if kill.recovered_s is None:
                kill.recovered_s = self._recovered_after(kill.at)
        # The topic reader sees a reply after the socket does only by a few milliseconds.
        await asyncio.sleep(2.0)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        return Report(
            self.turns,
            self.kills,
            dict(self.topic_replies),
            self.duration_s,
            owed_at_end=owed,
        )

    async def _owed(self) -> int:
        """How many of this run's turns ingest holds in its replay queue (accepted, no reply
        yet); an unreadable Redis counts as none, so the drain falls back to its stall rule."""
        # The services' environment, so a key prefix set for them is the one read here.
        env = self.platform.env()
        prefix = env.get("CBD_REDIS_KEY_PREFIX", RedisSettings.model_fields["key_prefix"].default)
        marker = f"{prefix}{PENDING_TEMPLATE.format(conversation=f'chaos-{self.run_id}-')}"
        client = aioredis.Redis.from_url(
            env["CBD_REDIS_URL"], socket_timeout=5, decode_responses=True
        )
        try:
            members = await client.zrange(f"{prefix}{DUE_KEY}", 0, -1)
        except (OSError, RedisError):
            return 0
        finally:
            await client.aclose()
        return sum(1 for name in members if str(name).startswith(marker))

    async def _kill_loop(self) -> None:
        await asyncio.sleep(self.first_kill_s)
        planned = list(self.first_targets)
        while self._sending:
            target = planned.pop(0) if planned else self.random.choice(self.targets)
            old_pid = self._pid(target)
            kill = Kill(target=target, at=self.now())
            self.kills.append(kill)
            await asyncio.to_thread(self._kill, target)
            watcher = asyncio.create_task(self._watch_restart(kill, old_pid))
            # The next kill waits until this one is recovered, so each is measured alone.
            while kill.recovered_s is None and self.now() - kill.at < 120:
                await asyncio.sleep(0.1)
                kill.recovered_s = self._recovered_after(kill.at)
            # Not wait_for with CancelledError suppressed: that swallowed the run's own
            # cancellation of this loop.
            try:
                await asyncio.wait({watcher}, timeout=30)
            finally:
                watcher.cancel()
            await asyncio.sleep(self.random.uniform(*self.pause_s))

    def _pid(self, target: str) -> int | None:
        if target == BROKER:
            return self.platform.stack.server("kafka").pid
        proc = self.platform.services.get(target)
        return proc.pid if proc is not None and proc.running() else None

    def _ready(self, target: str) -> bool:
        if target == BROKER:
            return tcp_open(self.platform.stack.ports.kafka)
        return http_ok(f"{self.platform.url(target)}/readyz")

    async def _watch_restart(self, kill: Kill, old_pid: int | None) -> None:
        """Note when the supervisor's new process is there, and when it is ready."""
        while kill.restarted_s is None:
            pid = self._pid(kill.target)
            if pid is not None and pid != old_pid:
                kill.restarted_s = self.now() - kill.at
            else:
                await asyncio.sleep(0.05)
        while kill.ready_s is None:
            if await asyncio.to_thread(self._ready, kill.target):
                kill.ready_s = self.now() - kill.at
            else:
                await asyncio.sleep(0.1)

    def _kill(self, target: str) -> None:
        if target == BROKER:
            self.platform.kill_broker()
        else:
            self.platform.kill_service(target)

    def _recovered_after(self, at: float) -> float | None:
        firsts = [t.replies[0] for t in self.turns if t.first_try >= at and t.replies]
        return min(firsts) - at if firsts else None

    async def _turn(self, index: int) -> None:
        conversation_id = f"chaos-{self.run_id}-{index}"
        turn = Turn(index=index, conversation_id=conversation_id, first_try=self.now())
        self.turns.append(turn)
        base = self.platform.url("ingest").replace("http://", "ws://")
        url = f"{base}/v1/conversations/{conversation_id}/ws?customer_id=web-{conversation_id}"
        message = json.dumps(
            {"type": "message", "text": HANDOFF_TEXT, "client_message_id": f"m-{index}"}
        )
        last_id = "0"
        while not turn.replies:
            try:
                async with websockets.connect(f"{url}&after={last_id}", open_timeout=5) as ws:
                    if turn.turn_id is None:
                        await ws.send(message)
                    last_id = await self._follow(ws, turn, message, last_id)
            except (OSError, websockets.WebSocketException, TimeoutError):
                # Ingest itself was killed: reconnect (backing off, so hundreds of waiting
                # customers do not storm the restarting edge) and resume after the last frame.
                turn.reconnects += 1
                await asyncio.sleep(min(2.0, 0.25 * 2 ** min(turn.reconnects, 3)))
        # Stay a moment: a duplicate reply would arrive now.
        await asyncio.sleep(1.0)

    async def _follow(self, ws: Any, turn: Turn, message: str, last_id: str) -> str:
        """Read frames until the reply; resend while refused. Returns the last frame id."""
        while True:
            frame = json.loads(await ws.recv())
            last_id = str(frame.get("id", last_id))
            kind = frame.get("type")
            if kind == "accepted" and turn.turn_id is None:
                turn.turn_id = str(frame["turn_id"])
                turn.accepted_at = self.now()
                if turn.turn_id in turn.early:
                    turn.replies.append(turn.early[turn.turn_id])
                    return await self._listen_for_duplicates(ws, turn, last_id)
            elif kind == "error" and turn.turn_id is None:
                # 503 while the broker is down: the widget resends with the same message id.
                status = str(frame.get("status", "?"))
                turn.refused_with[status] = turn.refused_with.get(status, 0) + 1
                await asyncio.sleep(0.5)
                await ws.send(message)
            elif kind == "reply" and turn.turn_id is None:
                # An edge killed after publishing the turn, before saying so, takes the resend
                # as a duplicate of it; the reconnect's replay can bring the reply before that
                # acceptance does. The widget shows it either way; the run counts it once the
                # acceptance names its turn.
                turn.early.setdefault(str(frame.get("turn_id")), self.now())
            elif kind == "reply" and frame.get("turn_id") == turn.turn_id:
                turn.replies.append(self.now())
                return await self._listen_for_duplicates(ws, turn, last_id)

    async def _listen_for_duplicates(self, ws: Any, turn: Turn, last_id: str) -> str:
        """After the reply, listen a second more: a duplicate would come now."""
        with contextlib.suppress(TimeoutError):
            while True:
                async with asyncio.timeout(1.0):
                    more = json.loads(await ws.recv())
                last_id = str(more.get("id", last_id))
                if more.get("type") == "reply" and more.get("turn_id") == turn.turn_id:
                    turn.replies.append(self.now())
        return last_id

    async def _read_reply_topic(self) -> None:
        settings = KafkaSettings(
            bootstrap_servers=self.platform.stack.env()["CBD_KAFKA_BOOTSTRAP_SERVERS"]
        )
        topic = settings.topic(Topic.REPLY_GENERATED)
        prefix = f"chaos-{self.run_id}-"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            # A broker that lost its log starts the topic again at offset 0: read the new log
            # from its start instead of skipping to its end.
            auto_offset_reset="earliest",
            # A topic re-created after a lost log may have other partitions: see them soon.
            metadata_max_age_ms=2000,
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                await asyncio.sleep(0.5)
                await consumer.topics()
                partitions = consumer.partitions_for_topic(topic)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                now = consumer.partitions_for_topic(topic) or set()
                if new := [TopicPartition(topic, p) for p in sorted(now) if p >= len(tps)]:
                    tps += new
                    consumer.assign(tps)
                    await consumer.seek_to_beginning(*new)
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        self._note_reply(record.value, prefix)
                # A broker that lost its log starts the partition again at 0, and tansu
                # answers a fetch past its end with nothing rather than an out-of-range
                # error: read the new log from its start, as the services do.
                await rewind_past_end("chaos", "reply-topic-reader", consumer)
        finally:
            await consumer.stop()

    def _note_reply(self, raw: bytes | None, prefix: str) -> None:
        if raw is None:
            return
        event = json.loads(raw)
        if str(event.get("conversation_id", "")).startswith(prefix):
            self.topic_replies[str(event["payload"]["turn_id"])].append(str(event["event_id"]))


def chaos_platform(
    run_dir: Path, broker_storage: BrokerStorage = "memory", *, static_membership: bool = False
) -> Platform:
    """The platform for a chaos run: embedded servers without the LLM (handoff turns)."""
    platform = Platform.for_tests(
        run_dir,
        broker_storage=broker_storage,
        extra_env={
            # Handed-over turns never call the LLM; agent suggestions would.
            "CBD_GENERATION_ASSIST_SUGGESTIONS": "false",
            # Every turn is a new customer from one address.
            "CBD_INGEST_CUSTOMER_RATE_PER_MIN": "100000",
            "CBD_INGEST_TENANT_RATE_PER_MIN": "1000000",
            # ... and every connection from one address: at 10 turns/s the default 600 per
            # minute refused most of the run's turns (429) and their reconnects stormed the edge.
            "CBD_INGEST_IP_RATE_PER_MIN": "1000000",
            # The edge's safety net for a turn a hop lost without the broker losing its log
            # (services/ingest/replay.py) acts within the run's 30 s drain, not after 120 s.
            "CBD_INGEST_REPLAY_AFTER_S": "30",
        },
    )
    platform.stack.with_llm = False
    platform.static_membership = static_membership
    return platform


async def run_chaos(platform: Platform, **options: Any) -> Report:
    """One chaos run against `platform`, supervised as `make run` supervises it."""
    with platform.supervised():
        return await Chaos(platform, **options).run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `make chaos`."""
    parser = argparse.ArgumentParser(
        prog="python -m cbd.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=10.0, help="turns per second")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"what may be killed (comma-separated, from {', '.join(TARGETS)}; default: all)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--broker-storage",
        choices=["s3", "memory"],
        default="memory",
        help="memory (default): broker kills lose what it held; s3: durable but slow here",
    )
    parser.add_argument(
        "--first-kill", type=float, default=5.0, help="seconds of load before the first kill"
    )
    parser.add_argument(
        "--static-membership",
        action="store_true",
        help="stable CBD_KAFKA_INSTANCE_ID per service process (KIP-345 static members)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="keep data and logs here (default: temporary)"
    )
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="cbd-chaos-") as tmp:
        platform = chaos_platform(
            args.run_dir or Path(tmp), args.broker_storage, static_membership=args.static_membership
        )
        started = time.monotonic()
        platform.start()
        print(f"platform started in {time.monotonic() - started:.1f} s", flush=True)
        try:
            report = asyncio.run(
                run_chaos(
                    platform,
                    rate=args.rate,
                    duration_s=args.duration,
                    targets=targets,
                    seed=args.seed,
                    first_kill_s=args.first_kill,
                )
            )
        finally:
            platform.stop()
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
