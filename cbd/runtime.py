"""The whole platform on one machine: embedded servers plus the six services as processes.

Used by `make run` (durable data under `.run/`, fixed ports) and by the end-to-end tests
(throw-away data, random ports). A service that dies is restarted, and since consumers commit
only after handling, what it had not finished is processed when it is back.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cbd.procs import ManagedProcess, ensure_free, free_port, http_ok
from cbd.serve import SERVICES
from cbd.stack import EmbeddedStack, StackPorts

DEFAULT_PORTS = {name: 8000 + i for i, name in enumerate(SERVICES)}

EMBEDDED_DEFAULTS = {
    # The CPU model reads the ~700-token care prompt in seconds on a small machine, where vLLM
    # on a GPU takes milliseconds; the production budget would send every cold turn to the
    # fallback. The environment still wins.
    "CBD_GENERATION_FIRST_TOKEN_TIMEOUT_S": "20",
}


@dataclass
class Platform:
    """The embedded stack and one process per service."""

    stack: EmbeddedStack
    service_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ManagedProcess] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    _last_restart: dict[str, float] = field(default_factory=dict)

    @classmethod
    def for_tests(cls, run_dir: Path, extra_env: dict[str, str] | None = None) -> Platform:
        """Throw-away data and free ports, so tests never touch a running `make run`."""
        return cls(
            stack=EmbeddedStack(run_dir, ports=StackPorts.random(), durable=False),
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
            **os.environ,
            **self.stack.env(),
            "CBD_LOG_FORMAT": "text",
            **self.extra_env,
        }
        for name, port in self.service_ports.items():
            env[f"CBD_{name.upper()}_PORT"] = str(port)
        return env

    def _process(self, name: str) -> ManagedProcess:
        return ManagedProcess(
            name=name,
            argv=[sys.executable, "-m", "cbd.serve", name],
            log_path=self.stack.logs / f"{name}.log",
            ready=lambda: http_ok(f"{self.url(name)}/readyz"),
            env=self.env(),
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

    def restart_exited(self) -> list[str]:
        """Restart every service whose process has exited; return their names.

        A service that keeps dying is restarted after growing pauses (1 s, 2 s, ... 30 s), so
        a crash loop does not starve the machine.
        """
        restarted = []
        now = time.monotonic()
        for name, proc in list(self.services.items()):
            if proc.running():
                continue
            count = self.restarts.get(name, 0)
            if now - self._last_restart.get(name, 0.0) < min(30.0, 2.0 ** max(0, count - 1)):
                continue
            self.restarts[name] = count + 1
            self._last_restart[name] = now
            print(f"! {name} exited; restarting it (log: {proc.log_path})", flush=True)
            self.start_service(name, wait=False)
            restarted.append(name)
        return restarted

    def supervise(self, poll_s: float = 1.0) -> None:
        """Restart services that exit, until interrupted."""
        while True:
            self.restart_exited()
            time.sleep(poll_s)

    def stop(self) -> None:
        """Stop the services (gracefully, in parallel), then the servers."""
        procs = list(self.services.values())
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            proc.stop(timeout_s=15)
        self.services.clear()
        self.stack.stop()
