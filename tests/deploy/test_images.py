"""One slim, non-root, read-only-friendly image per service, and a `make images` that says so
plainly when there is no Docker engine."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess

import pytest

from cbd.serve import SERVICES
from tests.deploy.observability import DEPLOY

ROOT = DEPLOY.parent


def dockerfile(service: str) -> str:
    """The text of a service's Dockerfile."""
    return (DEPLOY / "docker" / f"{service}.Dockerfile").read_text()


def test_one_dockerfile_per_service() -> None:
    found = {p.name.removesuffix(".Dockerfile") for p in (DEPLOY / "docker").glob("*.Dockerfile")}
    assert found == set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_image_is_multi_stage_slim_and_unprivileged(service: str) -> None:
    text = dockerfile(service)
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, re.MULTILINE)
    assert [s[1] for s in stages] == ["builder", "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    # The code runs from the source tree, data files and all, not from a wheel whose
    # package-data globs might leave some out.
    assert "COPY --from=builder /app /app" in text
    assert "PYTHONPATH=/app" in text
    for package in ("cbd", "shared", "services"):
        assert f"COPY {package} /app/{package}" in text
    # A numeric user, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert f'ENTRYPOINT ["python", "-m", "cbd.serve", "{service}"]' in text
    # Bytecode compiled at build time: nothing to write on a read-only root filesystem.
    assert "compileall" in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.MULTILINE):
        assert (ROOT / source).exists(), source


def test_build_context_keeps_every_data_file_the_services_read() -> None:
    patterns = [p for p in (ROOT / ".dockerignore").read_text().split() if not p.startswith("#")]
    data = [
        path.relative_to(ROOT)
        for package in ("cbd", "shared", "services")
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    ]
    assert data, "the packages ship data files (models' data, SQL, policies, pages)"
    for path in data:
        for pattern in patterns:
            hit = fnmatch.fnmatch(str(path), pattern.removeprefix("**/")) or any(
                fnmatch.fnmatch(part, pattern.removeprefix("**/")) for part in path.parts
            )
            assert not hit, f"{path} is left out of the build context by {pattern!r}"


def test_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".run", "tests", ".env", "**/__pycache__"):
        assert entry in ignored


def test_make_images_fails_clearly_without_docker() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    # A PATH with make but no docker, as on this machine and in CI.
    env = {**os.environ, "PATH": os.path.dirname(make)}
    if shutil.which("docker", path=env["PATH"]):
        pytest.skip("a docker CLI is on make's PATH")
    result = subprocess.run(
        [make, "images"], cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "no Docker engine" in result.stderr
