"""`cbd evaluate report`: the Table 1 maths on fixed sets, checked by hand and against SciPy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cbd import evaluate
from cbd.cli import main
from cbd.evaluate import Rating, bootstrap_ci, compare
from shared.events import REVIEW_CRITERIA


def all_criteria(score: int) -> dict[str, int]:
    return dict.fromkeys(REVIEW_CRITERIA, score)


def test_means_differences_and_n_on_a_set_computed_by_hand() -> None:
    ratings = [
        # scenario a: baseline 2 and 4 (mean 3), care 5: difference +2
        Rating("a", "baseline", all_criteria(2)),
        Rating("a", "baseline", all_criteria(4)),
        Rating("a", "care", all_criteria(5)),
        # scenario b: baseline 3, care 4: difference +1
        Rating("b", "baseline", all_criteria(3)),
        Rating("b", "care", all_criteria(4)),
        # scenario c: only care rated: counts in the care mean, not in the pairs
        Rating("c", "care", all_criteria(1)),
        # an unknown variant is ignored
        Rating("d", "other", all_criteria(5)),
    ]
    report = compare(ratings, resamples=2000, seed=1, pairing="scenario")
    assert [r.criterion for r in report.rows] == list(REVIEW_CRITERIA)
    row = report.rows[0]
    assert row.baseline_mean == pytest.approx(3.0)  # (2 + 4 + 3) / 3
    assert row.baseline_n == 3
    assert row.care_mean == pytest.approx(10 / 3)  # (5 + 4 + 1) / 3
    assert row.care_n == 3
    assert row.difference == pytest.approx(1.5)
    assert row.n_pairs == 2
    # Two pair differences, +1 and +2: every resampled mean lies in [1, 2].
    assert row.ci_low is not None
    assert row.ci_high is not None
    assert 1.0 <= row.ci_low <= 1.5 <= row.ci_high <= 2.0
    assert report.notes  # so few pairs are flagged


def test_identical_differences_have_a_zero_width_interval() -> None:
    ratings = [
        Rating(str(i), v, all_criteria(3 + (v == "care")))
        for i in range(5)
        for v in ("baseline", "care")
    ]
    row = compare(ratings, resamples=500).rows[0]
    assert (row.difference, row.ci_low, row.ci_high, row.n_pairs) == (1.0, 1.0, 1.0, 5)


def test_no_pairs_gives_no_difference_and_no_interval() -> None:
    row = compare([Rating("a", "care", all_criteria(4))]).rows[0]
    assert (row.difference, row.ci_low, row.ci_high, row.n_pairs) == (None, None, None, 0)
    assert row.baseline_mean is None
    assert row.baseline_n == 0


def test_the_interval_agrees_with_scipy_bootstrap() -> None:
    rng = np.random.default_rng(7)
    diffs = rng.normal(0.6, 1.0, size=40).round(2)
    ours = bootstrap_ci(diffs, confidence=0.95, resamples=20_000, seed=3)
    theirs = stats.bootstrap(
        (diffs,),
        np.mean,
        confidence_level=0.95,
        n_resamples=20_000,
        method="percentile",
        random_state=np.random.default_rng(4),
    ).confidence_interval
    assert ours is not None
    # Independent resampling streams: the intervals agree to Monte Carlo error.
    assert ours[0] == pytest.approx(theirs.low, abs=0.03)
    assert ours[1] == pytest.approx(theirs.high, abs=0.03)


def test_the_same_seed_gives_the_same_report() -> None:
    ratings = [
        Rating(str(i % 7), v, all_criteria((i * 3 + (v == "care")) % 5 + 1))
        for i in range(30)
        for v in ("baseline", "care")
    ]
    assert compare(ratings, seed=5).as_json() == compare(ratings, seed=5).as_json()


def test_the_command_writes_markdown_json_and_a_png_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ratings = tmp_path / "ratings.jsonl"
    lines = [
        {"pair": f"s{i}", "variant": v, "scores": all_criteria(s), "rater": "r1"}
        for i in range(12)
        for v, s in (("baseline", 2 + i % 3), ("care", 4 + i % 2))
    ]
    ratings.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate",
                "report",
                "--ratings",
                str(ratings),
                "--out",
                str(out),
                "--resamples",
                "500",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["rows"][0]["n_pairs"] == 12
    assert report["pairing"] == "scenario"
    markdown = (out / "report.md").read_text()
    assert "| Demonstrates care |" in markdown
    assert "![Baseline vs care by criterion](chart.png)" in markdown
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Baseline mean (n)" in capsys.readouterr().out
    html_out = tmp_path / "html"
    assert (
        main(
            [
                "evaluate",
                "report",
                "--ratings",
                str(ratings),
                "--out",
                str(html_out),
                "--format",
                "html",
                "--resamples",
                "200",
            ]
        )
        == 0
    )
    assert "<table>" in (html_out / "report.html").read_text()


def test_a_bad_ratings_file_is_refused_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pair": "a", "variant": "care", "scores": {"satisfaction": 9}}\n')
    assert main(["evaluate", "report", "--ratings", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a rating"):
        evaluate.load_ratings_file(bad)
