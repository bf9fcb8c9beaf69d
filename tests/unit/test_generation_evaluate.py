"""`cbd evaluate replies`: the rubric on the shipped scenarios, without an LLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cbd.cli import main
from services.generation.settings import PACKAGE_DIR

SCENARIOS = PACKAGE_DIR / "data" / "reply_scenarios.yaml"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, dict[str, object]]:
    assert main(["evaluate", "replies", str(SCENARIOS), *args]) == 0
    out = capsys.readouterr().out
    table, _, rest = out.partition("\n{")
    return table, json.loads("{" + rest)


def test_the_bad_replies_are_scored_as_bad_when_sent_unchecked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    table, report = run(capsys, "--mode", "llm", "--scripted-only")
    summary = report["summary"]
    assert isinstance(summary, dict)
    # The replies: an invented phone number, action and link; a hostile line; a
    # sarcastic complaint answered as thanks.
    assert summary["with_grounding_violations"] == 3
    assert summary["unkind"] == 1
    # "The customer is asking about the delivery time." went out as written.
    assert summary["not_to_the_customer"] == 1
    assert summary["acknowledged_share"] < 1
    assert "hostile_reply" in table


def test_checked_and_composed_replies_carry_care(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    _, summary = run(capsys, "--mode", "llm_checked", "--scripted-only", "--json", str(out))
    assert summary["with_grounding_violations"] == 0
    assert summary["unkind"] == 0
    assert summary["not_to_the_customer"] == 0
    assert summary["acknowledged_share"] == 1.0
    full = json.loads(out.read_text())
    assert {r["verdict"] for r in full["replies"]} <= {"passed", "regenerated", "composed"}
    _, composed = run(capsys, "--mode", "composed")
    composed_summary = composed["summary"]
    assert isinstance(composed_summary, dict)
    assert composed_summary["replies"] == 18
    assert composed_summary["with_grounding_violations"] == 0
    assert composed_summary["unkind"] == 0
    assert composed_summary["not_to_the_customer"] == 0
    assert composed_summary["acknowledged_share"] == 1.0
