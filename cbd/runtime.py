"""The whole platform on one machine: embedded servers plus the six services as processes.

Used by `make run` (durable data under `.run/`, fixed ports) and by the end-to-end tests
(throw-away data, random ports). A service or server that dies is restarted, and since
consumers commit only after handling and the broker keeps its data in SeaweedFS, what was not
finished is processed when it is back.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cbd.procs import Backoff, ManagedProcess, ensure_free, free_port, http_ok
from cbd.serve import SERVICES
from cbd.stack import BrokerStorage, EmbeddedStack, StackPorts

DEFAULT_PORTS = {name: 8000 + i for i, name in enumerate(SERVICES)}

EMBEDDED_DEFAULTS = {
    # The CPU model reads the ~700-token care prompt in seconds on a small machine, where vLLM
    # on a GPU takes milliseconds; the production budget would send every cold turn to the
    # fallback. The environment still wins.
    "CBD_GENERATION_FIRST_TOKEN_TIMEOUT_S": "20",
    # A bot turn queued behind others on the one-request-at-a-time CPU model can take minutes;
    # replaying it after 120 s would only queue a second LLM call behind the first (the edge
    # shows one reply either way). A lost log is still replayed at once.
    "CBD_INGEST_REPLAY_AFTER_S": "600",
}

FAST_FAILOVER = {
    # One machine, one in-memory broker: a consumer that died is noticed, and its partitions
    # handed to its restarted self, within seconds instead of Kafka's 45 s default. tansu
    # forms a group in about half the session timeout (measured on the 2-core VM with
    # `python -m bench.failover`: a fresh group forms in 5.0 s at 10 s / 3 s, 2.0 s at 3 s /
    # 0.5 s, 1.0 s at 2 s; a killed member's at-once replacement consumes after 18.6, 7.7 and
    # 4.5 s). 2 s is not used: after a broker kill the services' consumers never consumed
    # again at 2 s (`python -m cbd.chaos --targets broker`, 2 runs of 2), and did within
    # 2.5 s at 3 s. Not with S3 storage, where every heartbeat is an S3 round trip
    # (docs/architecture.md). Production keeps its own values from the environment.
    "CBD_KAFKA_SESSION_TIMEOUT_MS": "3000",
    "CBD_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
}


@dataclass
class Platform:
    """The embedded stack and one process per service."""

    stack: EmbeddedStack
    service_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ManagedProcess] = field(default_factory=dict)
    backoff: Backoff = field(default_factory=Backoff)
    static_membership: bool = False
    """Give each service process a stable `CBD_KAFKA_INSTANCE_ID` (`<service>-<replica>`), so
    its consumers are static group members (KIP-345). Off here: tansu pauses every join of a
    static member for about 6 s, slower than a dynamic join with the short embedded sessions
    (docs/architecture.md, "Faster recovery"); Apache Kafka hands a returning static member
    its partitions at once, so Kubernetes and Compose turn it on."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_tests(
        cls,
        run_dir: Path,
        extra_env: dict[str, str] | None = None,
        broker_storage: BrokerStorage = "memory",
    ) -> Platform:
        """Throw-away data and free ports, so tests never touch a running `make run`.

        The broker keeps its data in memory unless asked otherwise: tansu's S3 engine does not
        keep up with sustained load on a small machine (docs/architecture.md).
        """
        return cls(
            stack=EmbeddedStack(
                run_dir, ports=StackPorts.random(), durable=False, broker_storage=broker_storage
            ),
            service_ports={name: free_port() for name in SERVICES},
            extra_env=extra_env or {},
        )

    def url(self, service: str) -> str:
        """The base URL of a service."""
        return f"http://127.0.0.1:{self.service_ports[service]}"

    def env(self) -> dict[str, str]:
        """The environment every service process gets."""
        env = {
            **EMBEDDED_DEFAULTS,
            **(FAST_FAILOVER if self.stack.broker_storage == "memory" else {}),
            **os.environ,
            **self.stack.env(),
            "CBD_LOG_FORMAT": "text",
            **self.extra_env,
        }
        for name, port in self.service_ports.items():
            env[f"CBD_{name.upper()}_PORT"] = str(port)
        return env

    def instance_id(self, name: str, replica: int = 0) -> str:
        """The stable instance id of one replica of a service: the same for every restart of
        that replica, different from every other live process (one replica per service here),
        so two live consumers never fence each other out."""
        return f"{name}-{replica}"

    def _process(self, name: str) -> ManagedProcess:
        env = self.env()
        if self.static_membership:
            env["CBD_KAFKA_INSTANCE_ID"] = self.instance_id(name)
        return ManagedProcess(
            name=name,
            argv=[sys.executable, "-m", "cbd.serve", name],
            log_path=self.stack.logs / f"{name}.log",
            ready=lambda: http_ok(f"{self.url(name)}/readyz"),
            env=env,
        )

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the servers, then every service, and wait until all are ready."""
        self.stack.start()
        self.start_services(timeout_s)

    def start_services(self, timeout_s: float = 90.0) -> None:
        """Start every service on the already running servers and wait until all are ready."""
        ensure_free(self.service_ports)
        try:
            for name in SERVICES:
                self.start_service(name, wait=False)
            for name in SERVICES:
                self.services[name].wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def start_service(self, name: str, *, wait: bool = True, timeout_s: float = 90.0) -> None:
        """(Re)start one service process."""
        if (old := self.services.get(name)) is not None:
            old.stop()  # already exited or about to be replaced: closes its log
        proc = self._process(name)
        proc.start()
        self.services[name] = proc
        if wait:
            proc.wait_ready(timeout_s)

    def kill_service(self, name: str) -> None:
        """Kill one service abruptly (SIGKILL), as a crash would."""
        proc = self.services[name]
        proc.signal(signal.SIGKILL)
        if proc.proc is not None:
            proc.proc.wait(10)

    def kill_broker(self) -> None:
        """Kill the broker abruptly (SIGKILL); `restart_exited` brings it back."""
        proc = self.stack.server("kafka")
        proc.signal(signal.SIGKILL)
        if proc.proc is not None:
            proc.proc.wait(10)

    def restart_exited(self) -> list[str]:
        """Restart every server and service whose process has exited; return their names.

        Servers first (the services need them); a process that keeps dying is restarted after
        growing pauses (1 s, 2 s, ... 30 s), so a crash loop does not starve the machine.
        """
        with self._lock:
            restarted = self.stack.restart_exited()
            for name, proc in list(self.services.items()):
                if proc.running() or not proc.wanted or not self.backoff.due(name):
                    continue
                print(f"! {name} exited; restarting it (log: {proc.log_path})", flush=True)
                self.start_service(name, wait=False)
                restarted.append(name)
            return restarted

    def supervise(self, poll_s: float = 0.2) -> None:
        """Restart servers and services that exit, until interrupted."""
        while True:
            self.restart_exited()
            time.sleep(poll_s)

    @contextmanager
    def supervised(self, poll_s: float = 0.2) -> Iterator[None]:
        """Run the supervisor in a background thread for the duration of the block."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(poll_s):
                self.restart_exited()

        thread = threading.Thread(target=loop, name="cbd-supervisor", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def stop(self) -> None:
        """Stop the services (gracefully, in parallel), then the servers."""
        procs = list(self.services.values())
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            proc.stop(timeout_s=15)
        self.services.clear()
        self.stack.stop()
