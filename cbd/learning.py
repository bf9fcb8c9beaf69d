"""`cbd learning report`: a week's lessons from reviews and ratings.

- Playbooks and knowledge entries that go with low scores: for each, how many of its replies
  were reviewed or rated, the mean reviewer score, and the share of "low" replies (a reviewer
  scored any criterion 2 or less, or the customer rated 2 or less); worst first.
- Corrections that repeat: problem tags per playbook, and reviewers' better replies that say
  nearly the same thing (TF-IDF cosine similarity, scikit-learn), which are candidates for a
  playbook or knowledge change rather than one-off fixes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.events import REVIEW_CRITERIA

LOW = 2


@dataclass
class Item:
    """One playbook or knowledge entry and what happened to its replies."""

    name: str
    replies: int = 0
    reviewed: int = 0
    low: int = 0
    score_sum: float = 0.0
    tags: Counter[str] = field(default_factory=Counter)

    @property
    def low_share(self) -> float:
        """Share of its replies that were judged low."""
        return self.low / self.replies if self.replies else 0.0

    def as_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "name": self.name,
            "replies": self.replies,
            "reviewed": self.reviewed,
            "low": self.low,
            "low_share": round(self.low_share, 3),
            "mean_score": round(self.score_sum / self.reviewed, 2) if self.reviewed else None,
            "tags": dict(self.tags.most_common()),
        }


@dataclass(frozen=True)
class ReplyOutcome:
    """A bot reply with its reviews and ratings folded in."""

    reply_id: str
    playbook: str | None
    knowledge: list[str]
    review_means: list[float]
    low: bool
    tags: list[str]
    corrections: list[str]


@dataclass
class LearningReport:
    """The report."""

    since: str
    until: str
    playbooks: list[dict[str, Any]]
    knowledge: list[dict[str, Any]]
    repeated_corrections: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


def build(
    outcomes: list[ReplyOutcome],
    since: datetime,
    until: datetime,
    *,
    min_replies: int = 1,
    similarity: float = 0.5,
) -> LearningReport:
    """Fold reply outcomes into per-playbook and per-knowledge rows and correction clusters."""
    playbooks: dict[str, Item] = {}
    knowledge: dict[str, Item] = {}
    for o in outcomes:
        keys = [(playbooks, o.playbook or "(none)")] + [(knowledge, k) for k in o.knowledge]
        for table, name in keys:
            item = table.setdefault(name, Item(name))
            item.replies += 1
            item.low += o.low
            if o.review_means:
                item.reviewed += 1
                item.score_sum += sum(o.review_means) / len(o.review_means)
            item.tags.update(o.tags)

    def ranked(table: dict[str, Item]) -> list[dict[str, Any]]:
        rows = [i for i in table.values() if i.replies >= min_replies]
        rows.sort(key=lambda i: (-i.low_share, -i.low, i.name))
        return [i.as_json() for i in rows]

    return LearningReport(
        since=since.isoformat(),
        until=until.isoformat(),
        playbooks=ranked(playbooks),
        knowledge=ranked(knowledge),
        repeated_corrections=cluster_corrections(outcomes, similarity),
    )


def cluster_corrections(outcomes: list[ReplyOutcome], threshold: float) -> list[dict[str, Any]]:
    """Groups of two or more near-identical better replies, largest first."""
    texts: list[tuple[str, str]] = [
        (c, o.playbook or "(none)") for o in outcomes for c in o.corrections if c.strip()
    ]
    if len(texts) < 2:
        return []
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415
    from sklearn.metrics.pairwise import cosine_similarity  # noqa: PLC0415

    matrix = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(
        [t for t, _ in texts]
    )
    sims = cosine_similarity(matrix)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if sims[i, j] >= threshold:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(texts)):
        groups[find(i)].append(i)
    clusters: list[dict[str, Any]] = [
        {
            "count": len(members),
            "example": texts[members[0]][0],
            "playbooks": dict(Counter(texts[m][1] for m in members).most_common()),
        }
        for members in groups.values()
        if len(members) >= 2
    ]
    clusters.sort(key=lambda c: -int(c["count"]))
    return clusters


def to_markdown(report: LearningReport) -> str:
    """The report as Markdown."""
    lines = [f"# Learning report {report.since[:10]} to {report.until[:10]}", ""]
    for title, rows in (("Playbooks", report.playbooks), ("Knowledge entries", report.knowledge)):
        lines += [
            f"## {title} by share of low-scored replies",
            "",
            "| | replies | reviewed | low | low share | mean score | problems tagged |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            tags = ", ".join(f"{k} x{v}" for k, v in r["tags"].items()) or "-"
            mean = "-" if r["mean_score"] is None else f"{r['mean_score']:.2f}"
            lines.append(
                f"| {r['name']} | {r['replies']} | {r['reviewed']} | {r['low']} "
                f"| {r['low_share']:.0%} | {mean} | {tags} |"
            )
        lines.append("")
    lines += ["## Corrections that repeat", ""]
    if not report.repeated_corrections:
        lines.append("None this period.")
    for c in report.repeated_corrections:
        books = ", ".join(c["playbooks"])
        lines.append(f"- **{c['count']}x** ({books}): {c['example']}")
    return "\n".join(lines) + "\n"


_QUERY = """
SELECT r.reply_id, r.playbook, r.knowledge_used,
    (SELECT COALESCE(json_agg(v.scores), '[]'::json)::text
     FROM care.reviews v WHERE v.reply_id = r.reply_id) AS scores,
    (SELECT COALESCE(array_agg(t.tag), '{}')
     FROM care.reviews v, unnest(v.tags) AS t(tag) WHERE v.reply_id = r.reply_id) AS tags,
    (SELECT COALESCE(array_agg(DISTINCT v.better_reply), '{}')
     FROM care.reviews v WHERE v.reply_id = r.reply_id AND v.better_reply <> '') AS corrections,
    EXISTS (SELECT 1 FROM care.feedback f WHERE f.reply_id = r.reply_id AND f.rating <= $3)
        AS low_csat
FROM care.replies r
WHERE r.author = 'bot' AND r.at >= $1 AND r.at < $2
"""


async def load(dsn: str, since: datetime, until: datetime) -> list[ReplyOutcome]:
    """Every bot reply of the period with its reviews and ratings."""
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_QUERY, since, until, LOW)
    finally:
        await conn.close()
    outcomes = []
    for row in rows:
        reviews = json.loads(row["scores"])
        means = [sum(s[c] for c in REVIEW_CRITERIA) / len(REVIEW_CRITERIA) for s in reviews]
        low_review = any(min(s[c] for c in REVIEW_CRITERIA) <= LOW for s in reviews)
        outcomes.append(
            ReplyOutcome(
                reply_id=str(row["reply_id"]),
                playbook=row["playbook"],
                knowledge=list(row["knowledge_used"]),
                review_means=means,
                low=low_review or row["low_csat"],
                tags=list(row["tags"]),
                corrections=list(row["corrections"]),
            )
        )
    return outcomes


def add_parser(sub: Any) -> None:
    """Register `cbd learning report`."""
    p = sub.add_parser("report", help="the week's low-scoring playbooks and knowledge, repeats")
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--until", type=datetime.fromisoformat, default=None)
    p.add_argument("--format", choices=["markdown", "json"], default="markdown")
    p.add_argument("--out", type=Path)


def main(args: argparse.Namespace) -> int:
    """Run `cbd learning report` against CBD_PG_DSN."""
    from shared.settings import PostgresSettings  # noqa: PLC0415

    until = args.until or datetime.now(UTC)
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    since = until - timedelta(days=args.days)
    outcomes = asyncio.run(load(PostgresSettings().dsn.get_secret_value(), since, until))
    report = build(outcomes, since, until)
    text = json.dumps(report.as_json(), indent=2) if args.format == "json" else to_markdown(report)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0
