"""The care-check alert rules (deploy/prometheus/care-alerts.yml) under promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; skip where it is not installed (.ci/run installs Debian's prometheus)."""
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is missing (apt-get install prometheus)")
    return subprocess.run(
        [tool, *args], check=False, capture_output=True, text=True, timeout=120, cwd=RULES
    )


def test_the_care_rules_are_valid() -> None:
    result = promtool("check", "rules", "care-alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_care_alerts_fire_as_their_unit_tests_expect() -> None:
    result = promtool("test", "rules", "care-alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_can_fail(tmp_path: Path) -> None:
    # The same tests against a rule that never waits: the first test's quiet windows fail.
    (tmp_path / "care-alerts.yml").write_text(
        (RULES / "care-alerts.yml").read_text().replace("for: 15m", "for: 0m")
    )
    (tmp_path / "care-alerts.test.yml").write_text((RULES / "care-alerts.test.yml").read_text())
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is missing")
    result = subprocess.run(
        [tool, "test", "rules", "care-alerts.test.yml"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode != 0
