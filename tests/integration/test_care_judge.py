"""The LLM judge and scenario mode against a real OpenAI-compatible server (llama.cpp with
SmolLM2-135M here, vLLM in production), through the reference `openai` client.

The tiny model's judgement is not what is tested; what must hold for any output is: both
variants answer every scenario from generation's own prompts, the judge is never told the
variant, every item ends as seven 1-5 scores or a named failure, and the report counts them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from cbd import judge, scenarios
from cbd.cli import main
from cbd.evaluate import compare
from cbd.stack import LLM_MODEL_NAME

pytestmark = pytest.mark.integration


async def test_scenarios_are_answered_by_both_variants_and_judged_blind(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    url = stack_env["CBD_GENERATION_LLM_BASE_URL"]
    specs = [
        s for s in scenarios.load_scenarios(scenarios.DEFAULT_SET) if s["id"] == "anxious_parcel"
    ]
    # A busy shared CPU can take minutes per prompt; the LLM's speed is not what is tested.
    replies = await scenarios.generate(
        specs, base_url=url, model=LLM_MODEL_NAME, max_tokens=24, timeout_s=600
    )
    assert [(r.pair, r.variant) for r in replies] == [
        ("anxious_parcel", "baseline"),
        ("anxious_parcel", "care"),
    ]
    by = {(r.pair, r.variant): r for r in replies}
    # Generation's prompt builder decided what each variant carried.
    assert by["anxious_parcel", "care"].playbook == "delivery_delay"
    assert by["anxious_parcel", "baseline"].playbook is None
    assert (
        by["anxious_parcel", "care"].knowledge_used
        == by["anxious_parcel", "baseline"].knowledge_used
    )
    pairs = tmp_path / "pairs.jsonl"
    scenarios.write_pairs(replies, pairs)
    assert scenarios.read_pairs(pairs) == replies

    items = [
        judge.Item(r.pair, r.variant, r.message, r.reply, r.emotion, f"{r.pair}/{r.variant}")
        for r in replies
    ]
    # Blinded: the two variants' requests differ in the reply text and nothing else.
    blind = [
        judge.judge_messages(dataclasses.replace(i, reply="", variant="", item="")) for i in items
    ]
    assert blind[0] == blind[1]
    assert "Care-by-Design" not in json.dumps(judge.judge_messages(items[1]))
    judged = await judge.judge(
        items, base_url=url, model=LLM_MODEL_NAME, max_tokens=100, timeout_s=600
    )
    assert len(judged.ratings) + len(judged.failures) == len(items)
    for rating in judged.ratings:
        assert set(rating.scores) == set(judge.SCHEMA["properties"]["scores"]["required"])
        assert all(1 <= v <= 5 for v in rating.scores.values())
        assert rating.rater == f"llm:{LLM_MODEL_NAME}"
    report = compare(judged.ratings, resamples=200, pairing="scenario")
    assert report.rows[0].baseline_n + report.rows[0].care_n == len(judged.ratings)

    # The same through the command line, judge and report in one go (one item: it is slow).
    scenarios.write_pairs(replies[1:], pairs)
    out = tmp_path / "report"
    # The command runs its own event loop: off this test's loop, as from a shell.
    code = await asyncio.to_thread(
        main,
        [
            "evaluate",
            "report",
            "--pairs",
            str(pairs),
            "--judge-url",
            url,
            "--judge-model",
            LLM_MODEL_NAME,
            "--out",
            str(out),
            "--resamples",
            "200",
            "--judge-timeout",
            "600",
        ],
    )
    assert code == 0
    assert json.loads((out / "report.json").read_text())["pairing"] == "scenario"


def test_answers_that_are_not_seven_scores_are_refused() -> None:
    good = dict.fromkeys(judge.SCHEMA["properties"]["scores"]["required"], 3)
    assert judge.parse_scores('Sure! {"scores": ' + json.dumps(good) + "}") == good
    for bad in (
        "no json here",
        '{"scores": {"satisfaction": 3}}',
        '{"scores": ' + json.dumps({**good, "satisfaction": 9}) + "}",
        "{not json}",
    ):
        with pytest.raises(ValueError, match=r"JSON|scores|Expecting"):
            judge.parse_scores(bad)
