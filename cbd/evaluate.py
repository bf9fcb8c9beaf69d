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
import os
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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
class AgentBotRatings:
    """Agents' ratings of the bot's part of the conversations one variant served."""

    mean: float
    n: int


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
    agent_bot_ratings: dict[str, AgentBotRatings] = field(default_factory=dict)
    """By variant: agents' 1-5 ratings of how the bot handled conversations before the
    handoff (from care.feedback, source `agent`); filled from the database only."""

    def as_json(self) -> dict[str, Any]:
        """The JSON form (what `--format json` prints and `report.json` holds)."""
        return asdict(self)


def bootstrap_ci(
    values: Sequence[float] | npt.NDArray[np.float64],
    *,
    confidence: float,
    resamples: int,
    seed: int,
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
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _diff_cell(row: CriterionResult) -> str:
    if row.difference is None:
        return "-"
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
    if report.agent_bot_ratings:
        lines += [
            "",
            "## Agents' ratings of the bot before the handoff",
            "",
            "| Variant | Mean (1-5) | n |",
            "| --- | --- | --- |",
        ]
        lines.extend(
            f"| {variant} | {_num(r.mean)} | {r.n} |"
            for variant, r in sorted(report.agent_bot_ratings.items())
        )
    if chart:
        lines += ["", f"![Baseline vs care by criterion]({chart})"]
    return "\n".join(lines) + "\n"


def _html_row(r: CriterionResult) -> str:
    cells = [
        f"{_num(r.baseline_mean)} ({r.baseline_n})",
        f"{_num(r.care_mean)} ({r.care_n})",
        _diff_cell(r),
        str(r.n_pairs),
    ]
    name = html.escape(LABELS.get(r.criterion, r.criterion))
    return (
        f"<tr><th scope='row'>{name}</th>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        + "</tr>"
    )


def to_html(report: Report, chart: str | None = None) -> str:
    """The report as a standalone HTML page."""
    pct = round(report.confidence * 100)
    rows = "".join(_html_row(r) for r in report.rows)
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
    low = [
        d - (r.ci_low if r.ci_low is not None else d)
        for d, r in zip(diffs, report.rows, strict=True)
    ]
    high = [
        (r.ci_high if r.ci_high is not None else d) - d
        for d, r in zip(diffs, report.rows, strict=True)
    ]
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


SCENARIO_PREFIX = "scenario-"
"""Conversation ids of scenario replies queued for review: `scenario-<run>-<n>-<scenario id>`."""


async def load_reviews(dsn: str, *, scenarios: bool = False) -> list[Rating]:
    """Stored reviews with the variant of the reply each rates.

    Live replies are paired by reviewer; with `scenarios`, only scenario replies (queued by
    `cbd evaluate scenarios --queue`), paired by scenario.
    """
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT v.reviewer_id, v.reply_id, v.scores::text AS scores, r.variant,
                   r.conversation_id
            FROM care.reviews v JOIN care.replies r USING (reply_id)
            WHERE r.variant IS NOT NULL
              AND (r.conversation_id LIKE $1 || '%') = $2
            ORDER BY v.submitted_at
            """,
            SCENARIO_PREFIX,
            scenarios,
        )
    finally:
        await conn.close()
    return [
        Rating(
            pair_key=(row["conversation_id"].split("-", 3)[3] if scenarios else row["reviewer_id"]),
            variant=row["variant"],
            scores=json.loads(row["scores"]),
            rater=row["reviewer_id"],
            item=str(row["reply_id"]),
        )
        for row in rows
    ]


async def load_agent_bot_ratings(dsn: str) -> dict[str, AgentBotRatings]:
    """Agents' ratings of the bot's part, by the variant of the conversation's bot replies."""
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT c.variant, avg(f.rating)::float8 AS mean, count(*) AS n
            FROM care.feedback f JOIN care.conversations c USING (conversation_id)
            WHERE f.source = 'agent' AND c.variant IS NOT NULL
            GROUP BY c.variant
            """
        )
    finally:
        await conn.close()
    return {r["variant"]: AgentBotRatings(mean=round(r["mean"], 3), n=r["n"]) for r in rows}


async def queue_scenarios(dsn: str, replies: Sequence[Any]) -> int:
    """Put scenario replies in the review queue (reason `scenario`), blinded like any other."""
    import asyncpg  # noqa: PLC0415

    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for r in replies:
                # One conversation per reply, so the transcript never shows the other variant.
                conversation = f"{SCENARIO_PREFIX}{run}-{uuid.uuid4().hex[:6]}-{r.pair}"
                turn_id, reply_id = uuid.uuid4(), uuid.uuid4()
                await conn.execute(
                    "INSERT INTO care.turns (turn_id, conversation_id, customer_id, message, "
                    "emotion, at) VALUES ($1, $2, 'scenario', $3, $4::jsonb, $5)",
                    turn_id,
                    conversation,
                    r.message,
                    json.dumps({"label": r.emotion}),
                    now,
                )
                await conn.execute(
                    "INSERT INTO care.replies (reply_id, turn_id, conversation_id, customer_id, "
                    "channel, author, text, variant, playbook, knowledge_used, at) "
                    "VALUES ($1, $2, $3, 'scenario', 'api', 'bot', $4, $5, $6, $7, $8)",
                    reply_id,
                    turn_id,
                    conversation,
                    r.reply,
                    r.variant,
                    r.playbook,
                    list(r.knowledge_used),
                    now,
                )
                await conn.execute(
                    "INSERT INTO care.review_items (reply_id, reasons, priority) "
                    "VALUES ($1, ARRAY['scenario'], 1)",
                    reply_id,
                )
    finally:
        await conn.close()
    return len(replies)


# ---- the command ---------------------------------------------------------------------------


def add_report_parser(sub: Any) -> None:
    """Register `cbd evaluate report` and `cbd evaluate scenarios` on `cbd evaluate`."""
    p = sub.add_parser(
        "report",
        help="baseline vs care on the seven criteria (Table 1), from reviews, a ratings file "
        "or an LLM judge",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--ratings",
        type=Path,
        help="JSON Lines of ratings (pair, variant, scores); default: reviews in PostgreSQL",
    )
    src.add_argument(
        "--pairs",
        type=Path,
        help="scenario pairs (from `cbd evaluate scenarios`) to score with the LLM judge",
    )
    src.add_argument(
        "--scenarios",
        action="store_true",
        help="reviews of scenario replies queued with `cbd evaluate scenarios --queue`",
    )
    p.add_argument("--judge-url", help="OpenAI-compatible base URL of the judge (with --pairs)")
    p.add_argument("--judge-model", default="judge")
    p.add_argument("--judge-timeout", type=float, default=120.0, help="seconds per judgement")
    p.add_argument(
        "--judge-key-env",
        default="CBD_JUDGE_API_KEY",
        help="environment variable holding the judge's API key, if it needs one",
    )
    p.add_argument("--save-ratings", type=Path, help="also write the ratings used as JSON Lines")
    p.add_argument("--format", choices=["markdown", "html", "json"], default="markdown")
    p.add_argument("--out", type=Path, help="write report.<ext>, report.json and chart.png here")
    p.add_argument("--resamples", type=int, default=5000)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)

    g = sub.add_parser(
        "scenarios", help="generate both variants' replies for a scenario set (pairs to rate)"
    )
    g.add_argument("--set", type=Path, default=None, help="scenario YAML (default: the shipped)")
    g.add_argument("--llm-url", required=True, help="OpenAI-compatible base URL")
    g.add_argument("--model", required=True)
    g.add_argument("--key-env", default="CBD_GENERATION_LLM_API_KEY")
    g.add_argument("--out", type=Path, default=Path("pairs.jsonl"))
    g.add_argument(
        "--queue", action="store_true", help="also queue the replies for human review (CBD_PG_DSN)"
    )


def _ratings(args: argparse.Namespace) -> tuple[list[Rating], str, str]:
    """The ratings the report is built from, where they came from, and how they pair."""
    from shared.settings import PostgresSettings  # noqa: PLC0415

    if args.ratings is not None:
        return load_ratings_file(args.ratings), str(args.ratings), "scenario"
    if args.pairs is not None:
        from cbd import judge, scenarios  # noqa: PLC0415

        if not args.judge_url:
            raise ValueError("--pairs needs --judge-url")
        items = [
            judge.Item(r.pair, r.variant, r.message, r.reply, r.emotion, f"{r.pair}/{i}")
            for i, r in enumerate(scenarios.read_pairs(args.pairs))
        ]
        judged = asyncio.run(
            judge.judge(
                items,
                base_url=args.judge_url,
                model=args.judge_model,
                api_key=os.environ.get(args.judge_key_env, "none"),
                seed=args.seed,
                timeout_s=args.judge_timeout,
            )
        )
        for failure in judged.failures:
            print(f"judge failed: {failure}", file=sys.stderr)
        return judged.ratings, f"LLM judge {args.judge_model} on {args.pairs}", "scenario"
    dsn = PostgresSettings().dsn.get_secret_value()
    if args.scenarios:
        return asyncio.run(load_reviews(dsn, scenarios=True)), "reviewers (scenarios)", "scenario"
    return asyncio.run(load_reviews(dsn)), "reviewers (care.reviews)", "reviewer"


def main(args: argparse.Namespace) -> int:
    """Run `cbd evaluate report` or `cbd evaluate scenarios`."""
    if args.action == "scenarios":
        return scenarios_main(args)
    try:
        ratings, source, pairing = _ratings(args)
    except (OSError, ValueError) as exc:
        print(f"cbd evaluate report: {exc}", file=sys.stderr)
        return 2
    if args.save_ratings is not None:
        args.save_ratings.write_text(
            "".join(
                json.dumps(
                    {
                        "pair": r.pair_key,
                        "variant": r.variant,
                        "scores": r.scores,
                        "rater": r.rater,
                        "item": r.item,
                    }
                )
                + "\n"
                for r in ratings
            )
        )
    report = compare(
        ratings,
        confidence=args.confidence,
        resamples=args.resamples,
        seed=args.seed,
        pairing=pairing,
        source=source,
    )
    if pairing == "reviewer":
        # Live traffic: the agents who took conversations over rated the bot's part too.
        from shared.settings import PostgresSettings  # noqa: PLC0415

        dsn = PostgresSettings().dsn.get_secret_value()
        report = replace(report, agent_bot_ratings=asyncio.run(load_agent_bot_ratings(dsn)))
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


def scenarios_main(args: argparse.Namespace) -> int:
    """`cbd evaluate scenarios`: both variants' replies for a scenario set."""
    from cbd import scenarios  # noqa: PLC0415
    from shared.settings import PostgresSettings  # noqa: PLC0415

    try:
        specs = scenarios.load_scenarios(args.set or scenarios.DEFAULT_SET)
    except (OSError, ValueError) as exc:
        print(f"cbd evaluate scenarios: {exc}", file=sys.stderr)
        return 2
    replies = asyncio.run(
        scenarios.generate(
            specs,
            base_url=args.llm_url,
            model=args.model,
            api_key=os.environ.get(args.key_env, "none"),
        )
    )
    scenarios.write_pairs(replies, args.out)
    print(f"{len(replies)} replies ({len(specs)} scenarios x 2 variants) -> {args.out}")
    if args.queue:
        queued = asyncio.run(queue_scenarios(PostgresSettings().dsn.get_secret_value(), replies))
        print(f"{queued} queued for review (reason: scenario)")
    return 0
