"""How long a consumer group waits after one member is killed, per group setting.

A broker of its own (in-memory tansu, as `make chaos` and the tests use), one topic with three
partitions and a producer writing a record every 20 ms. One member process consumes the topic
in a group and commits each record, as the services do; it is killed with SIGKILL and its
replacement (the same settings, the same instance id when static) is started at once, as the
supervisor does. For each kill it prints how long the replacement took to start (interpreter
and imports) and to get its first record after the kill, per session timeout / heartbeat
interval and with static membership (KIP-345 `group_instance_id`) or without.

    .venv/bin/python -m bench.failover --kills 3
    .venv/bin/python -m bench.failover --configs 10000/3000/static 3000/500/dynamic
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cbd.procs import ManagedProcess, free_port, tcp_open
from cbd.stack import tansu_binary

TOPIC = "failover"
DEFAULT_CONFIGS = ("10000/3000/dynamic", "10000/3000/static", "3000/500/dynamic", "3000/500/static")


@dataclass(frozen=True)
class Config:
    """One group setting: session timeout, heartbeat interval, static or dynamic membership."""

    session_ms: int
    heartbeat_ms: int
    static: bool
    rebalance_ms: int | None = None

    @classmethod
    def parse(cls, text: str) -> Config:
        """`10000/3000/static[/rebalance ms]` -> Config(10000, 3000, True[, ms])."""
        session, heartbeat, kind, *rebalance = text.split("/")
        if kind not in ("static", "dynamic"):
            raise ValueError(f"{text}: membership is static or dynamic")
        return cls(int(session), int(heartbeat), kind == "static", *map(int, rebalance))

    @property
    def spec(self) -> str:
        """The command-line form."""
        kind = "static" if self.static else "dynamic"
        text = f"{self.session_ms}/{self.heartbeat_ms}/{kind}"
        return text if self.rebalance_ms is None else f"{text}/{self.rebalance_ms}"

    def __str__(self) -> str:
        kind = "static" if self.static else "dynamic"
        text = f"session {self.session_ms / 1000:g} s / heartbeat {self.heartbeat_ms / 1000:g} s"
        if self.rebalance_ms is not None:
            text += f" / rebalance {self.rebalance_ms / 1000:g} s"
        return f"{text}, {kind}"


async def member(bootstrap: str, group: str, config: Config) -> None:
    """Consume the topic in `group`, committing each record; report the first one's time."""
    print(f"started {time.time():.3f}", flush=True)
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        group_instance_id=f"{group}.member-0" if config.static else None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        session_timeout_ms=config.session_ms,
        heartbeat_interval_ms=config.heartbeat_ms,
        **({} if config.rebalance_ms is None else {"rebalance_timeout_ms": config.rebalance_ms}),
    )
    await consumer.start()
    first = True
    try:
        async for _record in consumer:
            if first:
                print(f"first {time.time():.3f}", flush=True)
                first = False
            await consumer.commit()
    finally:
        await consumer.stop()


def _spawn(bootstrap: str, group: str, config: Config) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bench.failover", "member", "--bootstrap", bootstrap]
    argv += ["--group", group, "--config", config.spec]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(proc: subprocess.Popen[str], word: str, timeout_s: float = 90.0) -> float:
    """The wall-clock time the member printed `word` at (blocking read of its stdout)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"member exited before {word!r}")
        if line.startswith(word + " "):
            return float(line.split()[1])
    raise TimeoutError(word)


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


async def _produce(bootstrap: str, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        i = 0
        while not stop.is_set():
            await producer.send_and_wait(TOPIC, str(i).encode(), key=str(i % 7).encode())
            i += 1
            await asyncio.sleep(0.02)
    finally:
        await producer.stop()


async def measure(
    bootstrap: str, config: Config, kills: int, run: str
) -> list[tuple[float, float]]:
    """(start-up, kill-to-first-record) in seconds for each kill of a member under `config`."""
    group = f"failover-{run}-{config.spec.replace('/', '-')}"
    proc = _spawn(bootstrap, group, config)
    await asyncio.to_thread(_wait_for, proc, "first")
    results = []
    try:
        for _ in range(kills):
            await asyncio.sleep(3.0)  # steady state: heartbeats flowing, offsets committed
            killed_at = time.time()
            await asyncio.to_thread(_kill, proc)
            proc = _spawn(bootstrap, group, config)
            started = await asyncio.to_thread(_wait_for, proc, "started")
            first = await asyncio.to_thread(_wait_for, proc, "first")
            results.append((started - killed_at, first - killed_at))
    finally:
        _kill(proc)
    return results


async def run(configs: list[Config], kills: int) -> None:
    """Start a broker, measure each config in turn, print a table."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    bootstrap = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="cbd-failover-") as tmp:
        broker = ManagedProcess(
            name="tansu",
            argv=[
                *(str(tansu_binary()), "broker", "--listener-url", url),
                *("--advertised-listener-url", url, "--storage-engine", "memory://tansu/"),
            ],
            log_path=Path(tmp) / "tansu.log",
            ready=lambda: tcp_open(port),
        )
        broker.start()
        try:
            broker.wait_ready(15)
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            await admin.create_topics([NewTopic(TOPIC, 3, 1)])
            await admin.close()
            stop = asyncio.Event()
            producing = asyncio.create_task(_produce(bootstrap, stop))
            run_id = f"{int(time.time())}"
            print(f"{kills} kill(s) per setting; start = kill to the new process's first line")
            for config in configs:
                results = await measure(bootstrap, config, kills, run_id)
                starts = ", ".join(f"{s:.1f}" for s, _ in results)
                firsts = ", ".join(f"{f:.1f}" for _, f in results)
                median = statistics.median(f for _, f in results)
                print(
                    f"{config!s:<44} start {starts} s; next record {firsts} s (median {median:.1f})"
                )
            stop.set()
            await producing
        finally:
            broker.stop()


def main() -> None:
    """`python -m bench.failover`: the table; `member`: one group member (internal)."""
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("role", nargs="?", default="measure", choices=["measure", "member"])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--bootstrap")
    parser.add_argument("--group")
    parser.add_argument("--config")
    args = parser.parse_args()
    if args.role == "member":
        asyncio.run(member(args.bootstrap, args.group, Config.parse(args.config)))
    else:
        asyncio.run(run([Config.parse(c) for c in args.configs], args.kills))


if __name__ == "__main__":
    main()
