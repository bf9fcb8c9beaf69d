"""`cbd export training`: reviewed replies as chat-format JSON Lines for fine-tuning.

What goes in: bot replies that reviewers rated highly (every criterion at or above
`--min-score`, no problem tagged) as they were, and replies a reviewer corrected (wrote a
better reply) with the correction as the answer. What never goes in: a customer without the
training consent (`consent.training` true in memory's customer record), or an erased customer
(their customer record is gone, and so are their care rows). Text is PII-masked.

The output directory gets `train.jsonl` (one `{"messages": [...]}` per line, the format of
OpenAI's and TRL's chat fine-tuning) and `DATASHEET.md` (sources, licence, counts, how it was
filtered and masked): the data set's datasheet, written with the data every time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.events import REVIEW_CRITERIA

SYSTEM_PROMPT = (
    "You are a caring customer-service assistant. Acknowledge how the customer feels in one "
    "short sentence, then help with what they need in plain words; when you cannot do exactly "
    "what they ask, offer the closest alternative. Use only facts you were given."
)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CARD = re.compile(r"\b(?:\d[ -]?){13,19}\b")
_PHONE = re.compile(r"(?<![\w])\+?\d[\d ().-]{7,}\d(?![\w])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_POSTCODE_UK = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}\b")
_LONG_NUMBER = re.compile(r"\b\d{6,}\b")


def mask_pii(text: str, names: list[str] | None = None) -> str:
    """Replace e-mail addresses, card and phone numbers, IBANs, UK postcodes, long numbers
    (order and account numbers) and the customer's known names with placeholders."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub("[IBAN]", text)
    text = _CARD.sub(
        lambda m: "[CARD]" if len(re.sub(r"\D", "", m.group())) >= 13 else m.group(), text
    )
    text = _PHONE.sub("[PHONE]", text)
    text = _POSTCODE_UK.sub("[POSTCODE]", text)
    text = _LONG_NUMBER.sub("[NUMBER]", text)
    for name in sorted({n for n in names or [] if n and len(n) >= 2}, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(name)}\b", "[NAME]", text, flags=re.IGNORECASE)
    return text


@dataclass(frozen=True)
class ExportStats:
    """What the export wrote, and what it left out and why."""

    written: int
    corrected: int
    rated_highly: int
    no_consent: int


_QUERY = """
SELECT v.review_id, v.scores::text AS scores, v.tags, v.better_reply, v.submitted_at,
       r.reply_id, r.turn_id, r.conversation_id, r.customer_id, r.tenant, r.text AS reply,
       r.variant,
       r.at AS replied_at,
       c.name, c.preferred_name,
       COALESCE((c.consent ->> $1)::boolean, false) AS consented
FROM care.reviews v
JOIN care.replies r USING (reply_id)
JOIN memory.customers c ON c.tenant = r.tenant AND c.customer_id = r.customer_id
WHERE v.submitted_at >= $2
ORDER BY v.submitted_at
"""

_HISTORY = """
SELECT role, text FROM (
    SELECT 'user' AS role, message AS text, at FROM care.turns
    WHERE conversation_id = $1 AND at <= $2 AND tenant = $3
    UNION ALL
    SELECT 'assistant' AS role, text, at FROM care.replies
    WHERE conversation_id = $1 AND at < $2 AND author IN ('bot', 'agent') AND tenant = $3
) x ORDER BY at
"""


def chosen(row: Any, min_score: int) -> tuple[str, str] | None:
    """(answer, why) for a review worth training on, else None."""
    better = (row["better_reply"] or "").strip()
    if better:
        return better, "corrected"
    scores = json.loads(row["scores"])
    if not row["tags"] and all(scores.get(c, 0) >= min_score for c in REVIEW_CRITERIA):
        return row["reply"], "rated_highly"
    return None


async def export(
    dsn: str,
    out: Path,
    *,
    consent_key: str = "training",
    min_score: int = 4,
    since: datetime | None = None,
) -> ExportStats:
    """Write train.jsonl and DATASHEET.md into `out`."""
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(dsn)
    written = corrected = rated = no_consent = 0
    seen: set[str] = set()
    lines = []
    try:
        rows = await conn.fetch(_QUERY, consent_key, since or datetime(1970, 1, 1, tzinfo=UTC))
        for row in rows:
            pick = chosen(row, min_score)
            if pick is None:
                continue
            if not row["consented"]:
                no_consent += 1
                continue
            answer, why = pick
            key = f"{row['reply_id']}:{why}:{answer}"
            if key in seen:
                continue  # two reviewers who agree make one example, not two
            seen.add(key)
            names = [row["name"], row["preferred_name"]]
            if row["name"]:
                names += row["name"].split()
            history = await conn.fetch(
                _HISTORY, row["conversation_id"], row["replied_at"], row["tenant"]
            )
            messages = [{"role": "system", "content": SYSTEM_PROMPT}]
            messages += [
                {"role": h["role"], "content": mask_pii(h["text"], names)} for h in history[-12:]
            ]
            if messages[-1]["role"] != "user":
                continue  # no customer message to answer (not recorded): nothing to learn
            messages.append({"role": "assistant", "content": mask_pii(answer, names)})
            lines.append(
                json.dumps(
                    {
                        "messages": messages,
                        "metadata": {"source": why, "variant": row["variant"]},
                    },
                    ensure_ascii=False,
                )
            )
            written += 1
            corrected += why == "corrected"
            rated += why == "rated_highly"
    finally:
        await conn.close()
    stats = ExportStats(written, corrected, rated, no_consent)
    sheet = datasheet(stats, consent_key=consent_key, min_score=min_score)
    await asyncio.to_thread(_write, out, lines, sheet)
    return stats


def _write(out: Path, lines: list[str], sheet: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text("".join(line + "\n" for line in lines))
    (out / "DATASHEET.md").write_text(sheet)


def datasheet(stats: ExportStats, *, consent_key: str, min_score: int) -> str:
    """The datasheet written beside the data."""
    return f"""# Datasheet: Care-by-Design reviewed replies

Exported {datetime.now(UTC).isoformat(timespec="seconds")} by `cbd export training`.

- **What**: {stats.written} chat examples (`train.jsonl`, one `{{"messages": [...]}}` per line):
  a system prompt, the conversation up to the customer's message (at most 12 turns), and the
  answer. {stats.corrected} answers are reviewers' corrections (the better reply they wrote),
  {stats.rated_highly} are bot replies every criterion of which a reviewer scored {min_score}
  or more with no problem tagged.
- **Source**: this deployment's customer conversations and its reviewers' reviews
  (`care.reviews`, the seven criteria of the Care-by-Design paper).
- **Consent**: only customers whose record says `consent.{consent_key}: true`;
  {stats.no_consent} otherwise eligible examples were left out for lack of it. Erased customers
  are never included (their records are gone).
- **PII**: e-mail addresses, card, phone, IBAN and long (order/account) numbers, UK postcodes
  and the customer's known names are replaced with placeholders (`[EMAIL]`, `[CARD]`, ...).
  Masking is by patterns: review a sample before training, and never publish the file.
- **Licence**: the deployment's own data, under its customers' terms; not for redistribution.
- **Labels**: `metadata.source` is `corrected` or `rated_highly`; `metadata.variant` the prompt
  variant that wrote the original reply.
- **Splits**: none; split by conversation (never by line) before training, so turns of one
  conversation never sit on both sides.
"""


def add_parser(sub: Any) -> None:
    """Register `cbd export training` on the `cbd export` subparser group."""
    p = sub.add_parser(
        "training", help="reviewed replies as chat JSON Lines for fine-tuning (consent only)"
    )
    p.add_argument("--out", type=Path, default=Path("training-export"))
    p.add_argument("--consent-key", default="training")
    p.add_argument("--min-score", type=int, default=4, choices=range(1, 6))
    p.add_argument("--since", type=datetime.fromisoformat, default=None)


def main(args: argparse.Namespace) -> int:
    """Run `cbd export training` against CBD_PG_DSN."""
    from shared.settings import PostgresSettings  # noqa: PLC0415

    since = args.since
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    try:
        stats = asyncio.run(
            export(
                PostgresSettings().dsn.get_secret_value(),
                args.out,
                consent_key=args.consent_key,
                min_score=args.min_score,
                since=since,
            )
        )
    except OSError as exc:
        print(f"cbd export training: {exc}", file=sys.stderr)
        return 2
    print(
        f"{stats.written} examples ({stats.corrected} corrected, {stats.rated_highly} rated "
        f"highly); {stats.no_consent} left out without consent -> {args.out}/train.jsonl"
    )
    return 0
