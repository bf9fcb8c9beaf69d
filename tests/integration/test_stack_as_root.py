"""The embedded stack as root from a private directory (a clone in /root or `mktemp -d`).

PostgreSQL refuses to run as root, so the stack runs it as an unprivileged user, who cannot
enter a 0700 directory. The stack must still start PostgreSQL (from a place that user can
reach) without opening up any directory above its own run directory.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

import cbd.stack
from cbd.stack import EmbeddedStack, PrivateDirectoryError, StackPorts, postgres_bin

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user"),
]


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory only root may enter, as `mktemp -d` makes."""
    path = Path(tempfile.mkdtemp(prefix="cbd-private-"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


def modes(path: Path) -> dict[Path, int]:
    """The mode of `path` and of every directory above it."""
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents]}


async def test_postgres_starts_from_a_private_clone_without_opening_its_parents(
    private_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clone whose venv is inside the private directory: its PostgreSQL binaries are as
    # unreachable for the unprivileged user as its run directory.
    package = postgres_bin().parent.parent
    clone_pkg = private_dir / "clone" / ".venv" / "site-packages" / "pgserver"
    for part in ("bin", "lib", "share"):
        shutil.copytree(package / "pginstall" / part, clone_pkg / "pginstall" / part)
    shutil.copytree(package.parent / "pgserver.libs", clone_pkg.parent / "pgserver.libs")
    monkeypatch.setattr(cbd.stack, "postgres_bin", lambda: clone_pkg / "pginstall" / "bin")
    run_dir = private_dir / "clone" / ".run"
    before = modes(private_dir)

    stack = EmbeddedStack(
        run_dir, ports=StackPorts.random(), durable=False, with_llm=False, broker_storage="memory"
    )
    stack.start()
    try:
        home = stack._postgres_home
        assert home is not None
        assert home.scratch is not None
        assert not home.bin.is_relative_to(private_dir)
        conn = await asyncpg.connect(stack.env()["CBD_PG_DSN"])
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            assert await conn.fetchval("SELECT '[1,2]'::vector <-> '[1,3]'::vector") == 1.0
        finally:
            await conn.close()
    finally:
        stack.stop()
    assert modes(private_dir) == before
    assert not home.scratch.exists()


def test_a_planted_fallback_directory_is_refused_with_what_to_do(
    private_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = (private_dir / ".run").resolve()
    home = cbd.stack._private_home(run_dir)
    shutil.rmtree(home)
    # Someone else's directory (here: one that others may write) must not be trusted.
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    try:
        with pytest.raises(PrivateDirectoryError, match="run as a normal user"):
            cbd.stack._private_home(run_dir)
    finally:
        home.rmdir()
