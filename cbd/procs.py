"""Child processes that start, report ready, and stop cleanly with their whole process group."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()
_PORT_FLOOR = 20000
"""Below this are `make run`'s fixed ports (8000-9333, SeaweedFS's 18333-18888)."""


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives outgoing connections (Linux: 32768 unless tuned)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now and that this process has not
    handed out before.

    Asking the kernel for port 0 is not enough, for two reasons measured here: twenty such
    ports for one test platform held a duplicate in 1 % of tries (the chaos test's Redis once
    shared its port with another listener and every PING timed out), and a port from the
    ephemeral range can be taken as the source port of any outgoing connection while a killed
    server is down, so its restart cannot bind. Ports are drawn between `make run`'s fixed
    ports and the ephemeral range when that gap exists, never twice.
    """
    ceiling = _ephemeral_floor()
    with _HANDED_OUT_LOCK:
        if ceiling - _PORT_FLOOR > 1000:
            for _ in range(1000):
                port = random.randrange(_PORT_FLOOR, ceiling)
                if port not in _HANDED_OUT and _bindable(port):
                    _HANDED_OUT.add(port)
                    return port
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """True when GET url answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (our own loopback URL)
            return 200 <= int(resp.status) < 300
    except (OSError, ValueError):
        return False


def ensure_free(ports: dict[str, int]) -> None:
    """Refuse to start when a port is taken: a readiness check would mistake the stranger
    already listening there for our own server."""
    busy = [f"{port} ({name})" for name, port in ports.items() if tcp_open(port)]
    if busy:
        raise ProcessFailed(
            "already in use: " + ", ".join(busy) + ". Is the platform already running? "
            "Stop whatever listens there, or shift every port: "
            "make run RUN_ARGS=--port-offset=100"
        )


class ProcessFailed(RuntimeError):
    """A child exited or never became ready; the message carries the end of its log."""


@dataclass
class Backoff:
    """When a process that exited may be restarted again.

    The first restart is immediate; one that keeps dying waits growing pauses after its last
    restart (1 s, 2 s, 4 s ... 30 s), so a crash loop does not starve the machine. One that
    stayed up for `stable_s` since its last restart is not in a loop: its count starts again,
    so its next restart is immediate too (as Kubernetes resets a container's back-off), instead
    of a 30 s pause for the tenth unrelated crash of the day.
    """

    restarts: dict[str, int] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    stable_s: float = 60.0

    def due(self, name: str) -> bool:
        """True (and counted as a restart) when `name` may be restarted now."""
        now = time.monotonic()
        count = self.restarts.get(name, 0)
        if now - self.last.get(name, -math.inf) >= self.stable_s:
            count = 0
        if now - self.last.get(name, -math.inf) < min(30.0, 2.0 ** max(0, count - 1)):
            return False
        self.restarts[name] = count + 1
        self.last[name] = now
        return True


@dataclass
class ManagedProcess:
    """One child process with a log file and a readiness check."""

    name: str
    argv: list[str]
    log_path: Path
    ready: Callable[[], bool]
    env: dict[str, str] | None = None
    user: str | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    wanted: bool = field(default=False, init=False)
    """True from `start` until `stop`: a wanted process that is not running has crashed."""
    _log: IO[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        """Launch (or relaunch) the process in its own process group, output appended to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self.wanted = True
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            user=self.user,
            cwd=self.cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        """True while the child has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the process wrote, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the readiness check passes; raise with the log tail if it never does."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise ProcessFailed(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise ProcessFailed(f"{self.name} not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        """Send a signal to the child's whole process group."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL whatever is left."""
        self.wanted = False
        if self.proc is not None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
