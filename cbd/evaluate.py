"""`cbd evaluate report`: baseline vs care on the paper's seven criteria, like its Table 1.

For each criterion: the mean score of baseline and of care replies (with n), and the paired
difference care - baseline with a bootstrap confidence interval and the number of pairs.

Pairs: ratings are paired by a *pair key*. In scenario mode (both variants answer the same
scripted message) the key is the scenario, exactly the paper's design. For live traffic no
message is answered twice, so the key is the reviewer: each reviewer's mean care score minus
their mean baseline score, which removes how strict each reviewer is from the comparison.
A key with only one variant rated adds to the means but not to the paired difference.

The bootstrap resamples pairs with replacement (percentile interval, a fixed seed, so a report
is reproducible); `tests/unit/test_evaluate.py` checks it against SciPy's bootstrap.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.events import REVIEW_CRITERIA

BASELINE = "baseline"
CARE = "care"
LABELS = {
    "overall_experience": "Overall experience",
    "satisfaction": "Satisfaction",
    "understands_query": "Understands the query",
    "understands_emotion": "Understands the emotion",
    "acknowledges_feelings": "Acknowledges feelings",
    "addresses_needs": "Addresses needs",
    "demonstrates_care": "Demonstrates care",
}


@dataclass(frozen=True)
class Rating:
    """One rater's scores of one reply."""

    pair_key: str
    variant: str
    scores: dict[str, int]
    rater: str = ""
    item: str = ""


@dataclass(frozen=True)
class CriterionResult:
    """One row of the table."""

    criterion: str
    baseline_mean: float | None
    baseline_n: int
    care_mean: float | None
    care_n: int
    difference: float | None
    """Mean over pairs of (care - baseline)."""
    ci_low: float | None
    ci_high: float | None
    n_pairs: int


@dataclass(frozen=True)
class Report:
    """The whole comparison."""

    rows: list[CriterionResult]
    confidence: float
    resamples: int
    seed: int
    pairing: str
    source: str
    ratings: int
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The JSON form (what `--format json` prints and `report.json` holds)."""
        return asdict(self)


def bootstrap_ci(
    values: Sequence[float], *, confidence: float, resamples: int, seed: int
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; None without values."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def compare(
    ratings: Iterable[Rating],
    *,
    criteria: Sequence[str] = REVIEW_CRITERIA,
    confidence: float = 0.95,
    resamples: int = 5000,
    seed: int = 0,
    pairing: str = "reviewer",
    source: str = "reviewers",
) -> Report:
    """The table from a set of ratings."""
    ratings = list(ratings)
    rows = []
    for index, criterion in enumerate(criteria):
        by_variant: dict[str, list[int]] = defaultdict(list)
        by_pair: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for r in ratings:
            if criterion not in r.scores or r.variant not in (BASELINE, CARE):
                continue
            by_variant[r.variant].append(r.scores[criterion])
            by_pair[r.pair_key][r.variant].append(r.scores[criterion])
        diffs = [
            float(np.mean(v[CARE]) - np.mean(v[BASELINE]))
            for _, v in sorted(by_pair.items())
            if v[CARE] and v[BASELINE]
        ]
        # A different stream per criterion, the same on every run.
        ci = bootstrap_ci(diffs, confidence=confidence, resamples=resamples, seed=seed + index)
        rows.append(
            CriterionResult(
                criterion=criterion,
                baseline_mean=_mean(by_variant[BASELINE]),
                baseline_n=len(by_variant[BASELINE]),
                care_mean=_mean(by_variant[CARE]),
                care_n=len(by_variant[CARE]),
                difference=_mean(diffs),
                ci_low=ci[0] if ci else None,
                ci_high=ci[1] if ci else None,
                n_pairs=len(diffs),
            )
        )
    notes = []
    if rows and rows[0].n_pairs < 10:
        notes.append(
            f"Only {rows[0].n_pairs} pairs: the interval is wide and the difference may be noise."
        )
    return Report(
        rows=rows,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        pairing=pairing,
        source=source,
        ratings=len(ratings),
        notes=notes,
    )


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _diff_cell(row: CriterionResult) -> str:
    if row.difference is None:
        return "–"
    return f"{_num(row.difference, True)} [{_num(row.ci_low, True)}, {_num(row.ci_high, True)}]"


def to_markdown(report: Report, chart: str | None = None) -> str:
    """The report as Markdown."""
    pct = round(report.confidence * 100)
    lines = [
        "# Baseline vs Care-by-Design",
        "",
        f"Source: {report.source}; {report.ratings} ratings; pairs by {report.pairing}; "
        f"{pct}% percentile bootstrap ({report.resamples} resamples, seed {report.seed}).",
        "",
        f"| Criterion | Baseline mean (n) | Care mean (n) | Difference [{pct}% CI] | n pairs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report.rows:
        lines.append(
            f"| {LABELS.get(row.criterion, row.criterion)} "
            f"| {_num(row.baseline_mean)} ({row.baseline_n}) "
            f"| {_num(row.care_mean)} ({row.care_n}) "
            f"| {_diff_cell(row)} | {row.n_pairs} |"
        )
    lines.append("")
    lines.extend(f"> {note}" for note in report.notes)
    if chart:
        lines += ["", f"![Baseline vs care by criterion]({chart})"]
    return "\n".join(lines) + "\n"


def to_html(report: Report, chart: str | None = None) -> str:
    """The report as a standalone HTML page."""
    pct = round(report.confidence * 100)
    rows = "".join(
        "<tr><th scope='row'>{}</th><td>{} ({})</td><td>{} ({})</td><td>{}</td><td>{}</td></tr>"
        .format(
            html.escape(LABELS.get(r.criterion, r.criterion)),
            _num(r.baseline_mean),
            r.baseline_n,
            _num(r.care_mean),
            r.care_n,
            html.escape(_diff_cell(r)),
            r.n_pairs,
        )
        for r in report.rows
    )
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in report.notes)
    img = f"<img src='{html.escape(chart)}' alt='Baseline vs care by criterion'>" if chart else ""
    return (
        "<!doctype html><html lang='en'><meta charset='utf-8'>"
        "<title>Baseline vs Care-by-Design</title>"
        "<style>body{font:16px system-ui;margin:2rem;max-width:60rem}"
        "table{border-collapse:collapse}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;"
        "text-align:left}.note{color:#8a5a00}img{max-width:100%}</style>"
        "<h1>Baseline vs Care-by-Design</h1>"
        f"<p>Source: {html.escape(report.source)}; {report.ratings} ratings; pairs by "
        f"{html.escape(report.pairing)}; {pct}% percentile bootstrap ({report.resamples} "
        f"resamples, seed {report.seed}).</p>"
        f"<table><thead><tr><th>Criterion</th><th>Baseline mean (n)</th><th>Care mean (n)</th>"
        f"<th>Difference [{pct}% CI]</th><th>n pairs</th></tr></thead><tbody>{rows}</tbody>"
        f"</table>{notes}{img}</html>\n"
    )


def write_chart(report: Report, path: Path) -> None:
    """A PNG bar chart: baseline and care means per criterion, with the paired CI as a band."""
    import matplotlib  # noqa: PLC0415 (heavy, and only for the chart)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = [LABELS.get(r.criterion, r.criterion) for r in report.rows]
    x = np.arange(len(names))
    fig, (ax, ax_diff) = plt.subplots(
        2, 1, figsize=(10, 7), height_ratios=[3, 2], constrained_layout=True
    )
    base = [r.baseline_mean or 0.0 for r in report.rows]
    care = [r.care_mean or 0.0 for r in report.rows]
    ax.bar(x - 0.2, base, 0.4, label="Baseline", color="#8a7d73")
    ax.bar(x + 0.2, care, 0.4, label="Care-by-Design", color="#9a3f1c")
    ax.set_ylim(0, 5)
    ax.set_ylabel("Mean score (1-5)")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.legend(loc="lower right")
    diffs = [r.difference if r.difference is not None else 0.0 for r in report.rows]
    low = [d - (r.ci_low if r.ci_low is not None else d) for d, r in zip(diffs, report.rows)]
    high = [(r.ci_high if r.ci_high is not None else d) - d for d, r in zip(diffs, report.rows)]
    ax_diff.errorbar(x, diffs, yerr=[low, high], fmt="o", color="#0f5e57", capsize=4)
    ax_diff.axhline(0, color="#999", linewidth=1)
    ax_diff.set_ylabel(f"Care - baseline ({round(report.confidence * 100)}% CI)")
    ax_diff.set_xticks(x, names, rotation=20, ha="right")
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- where ratings come from ---------------------------------------------------------------


def load_ratings_file(path: Path) -> list[Rating]:
    """JSON Lines of `{"pair": ..., "variant": ..., "scores": {...}, "rater"?: ...}`."""
    ratings = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            scores = {k: int(v) for k, v in row["scores"].items() if k in REVIEW_CRITERIA}
            if not all(1 <= v <= 5 for v in scores.values()):
                raise ValueError("scores are 1-5")
            ratings.append(
                Rating(
                    pair_key=str(row["pair"]),
                    variant=str(row["variant"]),
                    scores=scores,
                    rater=str(row.get("rater", "")),
                    item=str(row.get("item", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: not a rating ({exc})") from exc
    return ratings


async def load_reviews(dsn: str) -> list[Rating]:
    """Every stored review with the variant of the reply it rates, paired by reviewer."""
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT v.reviewer_id, v.reply_id, v.scores::text AS scores, r.variant
            FROM care.reviews v JOIN care.replies r USING (reply_id)
            WHERE r.variant IS NOT NULL
            ORDER BY v.submitted_at
            """
        )
    finally:
        await conn.close()
    return [
        Rating(
            pair_key=row["reviewer_id"],
            variant=row["variant"],
            scores=json.loads(row["scores"]),
            rater=row["reviewer_id"],
            item=str(row["reply_id"]),
        )
        for row in rows
    ]


# ---- the command ---------------------------------------------------------------------------


def add_report_parser(sub: Any) -> None:
    """Register `cbd evaluate report` on the `cbd evaluate` subparser group."""
    p = sub.add_parser(
        "report",
        help="baseline vs care on the seven criteria (Table 1), from reviews or a ratings file",
    )
    p.add_argument(
        "--ratings",
        type=Path,
        help="JSON Lines of ratings (pair, variant, scores); default: reviews in PostgreSQL "
        "(CBD_PG_DSN)",
    )
    p.add_argument("--pair-by", choices=["reviewer", "scenario"], default=None)
    p.add_argument("--format", choices=["markdown", "html", "json"], default="markdown")
    p.add_argument("--out", type=Path, help="write report.<ext>, report.json and chart.png here")
    p.add_argument("--resamples", type=int, default=5000)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    """Run `cbd evaluate report`."""
    if args.ratings is not None:
        try:
            ratings = load_ratings_file(args.ratings)
        except (OSError, ValueError) as exc:
            print(f"cbd evaluate report: {exc}", file=sys.stderr)
            return 2
        source, pairing = str(args.ratings), args.pair_by or "scenario"
    else:
        from shared.settings import PostgresSettings  # noqa: PLC0415

        ratings = asyncio.run(load_reviews(PostgresSettings().dsn.get_secret_value()))
        source, pairing = "reviewers (care.reviews)", "reviewer"
    report = compare(
        ratings,
        confidence=args.confidence,
        resamples=args.resamples,
        seed=args.seed,
        pairing=pairing,
        source=source,
    )
    if args.out is None:
        if args.format == "json":
            print(json.dumps(report.as_json(), indent=2))
        elif args.format == "html":
            print(to_html(report))
        else:
            print(to_markdown(report))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    write_chart(report, args.out / "chart.png")
    (args.out / "report.json").write_text(json.dumps(report.as_json(), indent=2) + "\n")
    if args.format == "html":
        (args.out / "report.html").write_text(to_html(report, "chart.png"))
    else:
        (args.out / "report.md").write_text(to_markdown(report, "chart.png"))
    print(to_markdown(report))
    print(f"written to {args.out}/")
    return 0
