"""An LLM judge for `cbd evaluate report`: the seven criteria scored by a model, blinded.

Any OpenAI-compatible server (vLLM in production, llama.cpp here) through the reference
`openai` client. The judge sees a rubric, three calibration examples with their scores, the
customer's message (and the emotion read from it, as a reviewer does) and one reply; never the
variant, never the other variant's reply, and the items come in a shuffled order, so position
and pairing cannot tell it which prompt wrote what. The answer is constrained to a JSON object
(`response_format`) and validated; a malformed answer is retried once and then counted as a
failure, never guessed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cbd.evaluate import Rating
from shared.events import REVIEW_CRITERIA, ReviewScores

RUBRIC = """\
You rate one customer-service reply. Score each criterion from 1 (very poor) to 5 (excellent):
- overall_experience: how good it would feel to receive this reply.
- satisfaction: how satisfied the customer would be with it.
- understands_query: it gets what the customer is asking for.
- understands_emotion: it shows it noticed how the customer feels.
- acknowledges_feelings: it names or validates the feeling, briefly and sincerely.
- addresses_needs: it helps with the need in concrete steps, or says honestly what it cannot do.
- demonstrates_care: it treats the customer as a person (warmth, an alternative when the exact
  request cannot be met), without exaggeration.
A reply that invents facts, promises what it cannot, or ignores the question scores low on
addresses_needs whatever its tone. Judge only the reply, not the company.
Answer with a JSON object: {"scores": {<criterion>: <1-5>, ...}, "reason": "<one sentence>"}."""

CALIBRATION: list[tuple[str, str, dict[str, int]]] = [
    (
        "My parcel still hasn't arrived and it's a birthday present for tomorrow, I'm worried.",
        "Delivery times vary. Check the tracking page.",
        dict(zip(REVIEW_CRITERIA, (2, 2, 3, 1, 1, 2, 1), strict=True)),
    ),
    (
        "My parcel still hasn't arrived and it's a birthday present for tomorrow, I'm worried.",
        "I understand how worrying that is with the birthday tomorrow. I've checked: it's with "
        "the courier and due by 6pm today. If it doesn't arrive, reply here and I'll arrange a "
        "next-day replacement.",
        dict(zip(REVIEW_CRITERIA, (5, 5, 5, 5, 5, 5, 5), strict=True)),
    ),
    (
        "Can I get my debit card in purple?",
        "I'm so so sorry!!! We totally understand your frustration and we are devastated.",
        dict(zip(REVIEW_CRITERIA, (2, 1, 1, 1, 2, 1, 2), strict=True)),
    ),
]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "scores": {
            "type": "object",
            "properties": {
                c: {"type": "integer", "minimum": 1, "maximum": 5} for c in REVIEW_CRITERIA
            },
            "required": list(REVIEW_CRITERIA),
        },
        "reason": {"type": "string"},
    },
    "required": ["scores"],
}


RESPONSE_FORMATS: list[Any] = [
    {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA}},
    {"type": "json_object", "schema": SCHEMA},
]
"""Constrain the answer to the schema: OpenAI's form first (vLLM's guided decoding), then the
JSON mode with a schema that llama.cpp's server turns into a grammar. A server that refuses
the first (400/422) gets the second for the rest of the run."""


@dataclass(frozen=True)
class Item:
    """One reply to judge: `variant` stays with us, never goes into the prompt."""

    pair: str
    variant: str
    message: str
    reply: str
    emotion: str = ""
    item: str = ""


@dataclass(frozen=True)
class Judged:
    """What the judge gave back for a set of items."""

    ratings: list[Rating]
    failures: list[str]


def judge_messages(item: Item) -> list[dict[str, str]]:
    """The chat messages for one item: rubric, calibration, then the item (blinded)."""
    messages = [{"role": "system", "content": RUBRIC}]
    for message, reply, scores in CALIBRATION:
        messages.append({"role": "user", "content": _item_text(message, reply, "")})
        messages.append(
            {"role": "assistant", "content": json.dumps({"scores": scores, "reason": "example"})}
        )
    messages.append({"role": "user", "content": _item_text(item.message, item.reply, item.emotion)})
    return messages


def _item_text(message: str, reply: str, emotion: str) -> str:
    feeling = f"\nThe customer seems to feel: {emotion}" if emotion else ""
    return f"Customer message:\n{message}{feeling}\n\nReply to rate:\n{reply}"


def parse_scores(content: str) -> dict[str, int]:
    """The seven scores from the judge's answer; ValueError when it is not exactly that."""
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the answer")
    data = json.loads(content[start : end + 1])
    scores = data.get("scores") if isinstance(data, dict) else None
    try:
        return ReviewScores.model_validate(scores).model_dump()
    except ValidationError as exc:
        raise ValueError(f"not seven 1-5 scores: {exc.error_count()} errors") from exc


async def judge(
    items: Sequence[Item],
    *,
    base_url: str,
    model: str,
    api_key: str = "none",
    seed: int = 0,
    timeout_s: float = 120.0,
    max_tokens: int = 200,
) -> Judged:
    """Score every item with the model; failures are named, not guessed."""
    from openai import (  # noqa: PLC0415
        AsyncOpenAI,
        BadRequestError,
        OpenAIError,
        UnprocessableEntityError,
    )

    client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=1)
    order = list(items)
    random.Random(seed).shuffle(order)
    ratings: list[Rating] = []
    failures: list[str] = []
    fmt = 0
    try:
        for item in order:
            last_error = ""
            # The client's request types are TypedDicts; ours are plain dicts of the same shape.
            messages: Any = judge_messages(item)
            tries = 0
            while tries < 2:
                try:
                    completion = await client.chat.completions.create(
                        model=model,
                        messages=messages,
                        temperature=0.0,
                        max_tokens=max_tokens,
                        response_format=RESPONSE_FORMATS[fmt],
                    )
                    content = completion.choices[0].message.content or ""
                    scores = parse_scores(content)
                except (BadRequestError, UnprocessableEntityError) as exc:
                    if fmt + 1 < len(RESPONSE_FORMATS):
                        fmt += 1  # the server speaks the other JSON mode: not the item's fault
                        continue
                    last_error = f"{type(exc).__name__}: {exc}"
                except (OpenAIError, ValueError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    ratings.append(
                        Rating(
                            item.pair, item.variant, scores, rater=f"llm:{model}", item=item.item
                        )
                    )
                    break
                tries += 1
            else:
                failures.append(f"{item.item or item.pair}: {last_error}")
    finally:
        await client.close()
    return Judged(ratings, failures)
