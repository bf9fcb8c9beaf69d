"""Fixtures for the deployment checks: rendered manifests, tools found on the machine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.observability import DEPLOY

OVERLAYS = ("base", "overlays/dev", "overlays/prod")


def tool(name: str, install: str) -> str:
    """The path of a command-line tool, or skip the test saying how to get it."""
    venv_bin = Path(sys.executable).parent / name  # the [dev] extra's tools live in the venv
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed ({install})")
    return found


def render(kubectl: str, target: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a kustomization under deploy/k8s, as documents."""
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / target)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every kustomization rendered offline, by its path under deploy/k8s."""
    kubectl = tool("kubectl", "kubectl renders kustomizations offline")
    return {target: render(kubectl, target) for target in OVERLAYS}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return DEPLOY.parent
