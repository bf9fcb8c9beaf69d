"""Closing-question answers on every channel: parse a typed score, and ask on a phone keypad.

Pure functions for the channel adapters. A customer answers "How would you rate us, 1 to 5?"
in many ways ("5", "five", "5/5", "4 stars", "9 out of 10", "NPS 8", "4 - the wait was long");
anything that is not clearly one score (two different numbers, a negation, an order number in
a sentence) parses to None, so the adapter treats it as an ordinary message instead of
recording a rating the customer did not give.

Voice asks with a keypad `<Gather>` (DTMF is exact where speech recognition of "four"/"for" is
not) and parses the digits Twilio posts back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

Asked = Literal["csat", "nps"]

_WORDS = {
    "zero": 0,
    "nil": 0,
    "none": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_NUMBER = r"(10|[0-9]|zero|nil|one|two|three|four|five|six|seven|eight|nine|ten)"
_OUT_OF = re.compile(
    rf"(?<![\w.]){_NUMBER}\s*(?:/|out\s+of|of|outta)\s*(5|10|five|ten)(?![\w.])", re.IGNORECASE
)
_NPS = re.compile(rf"\bnps\s*[:=]?\s*(?:score\s*(?:of\s*)?)?{_NUMBER}(?![\w.])", re.IGNORECASE)
_STARS = re.compile(rf"(?<![\w.]){_NUMBER}\s*(?:stars?|\*)(?!\w)", re.IGNORECASE)
_LONE = re.compile(rf"(?<![\w.,/-]){_NUMBER}(?![\w.,/])", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"\d")
_NEGATION = re.compile(r"\b(?:not|never|no\s+way|isn'?t|wasn'?t|nothing\s+like)\b", re.IGNORECASE)
_STAR_CHARS = "\u2b50\u2605"
_MAX_WORDS_FOR_BARE = 12
"""A bare number counts only in a short answer; in a long message it is likely something else."""
_MAX_WORDS_FOR_WORD = 3


@dataclass(frozen=True)
class SurveyAnswer:
    """A parsed closing-question answer."""

    csat: int | None
    """1-5, when the answer gives one (a 0-10 answer to the CSAT question is mapped onto it;
    an answer to the NPS question gives none)."""
    nps: int | None
    """0-10, when the answer is on that scale and NPS was asked or named."""
    comment: str
    """What the customer wrote besides the score."""


def _value(token: str) -> int:
    token = token.lower()
    return _WORDS[token] if token in _WORDS else int(token)


def _comment(text: str, span: tuple[int, int]) -> str:
    rest = " ".join((text[: span[0]] + " " + text[span[1] :]).split())
    # Plain strips, not a pattern: `[...]+$` re-read a long run of these characters from
    # every start inside it (quadratic: "- " x 2,000 then a letter took 120 ms). After the
    # join above the only whitespace left is single spaces.
    return rest.lstrip(" -\u2013\u2014:,.;!").rstrip(" -\u2013\u2014:,;").strip()


def _answer(
    value: int, scale: int, asked: Asked, nps_named: bool, comment: str
) -> SurveyAnswer | None:
    if scale == 5:
        if not 1 <= value <= 5:
            return None
        return SurveyAnswer(csat=value, nps=None, comment=comment)
    if not 0 <= value <= 10:
        return None
    # A 0-10 answer to the CSAT question maps onto 1-5; an NPS answer is not a CSAT.
    csat = max(1, math.ceil(value / 2)) if asked == "csat" else None
    nps = value if (asked == "nps" or nps_named) else None
    return SurveyAnswer(csat=csat, nps=nps, comment=comment)


def parse_survey_answer(  # noqa: PLR0911 (one early answer per form a reply can take)
    text: str, asked: Asked = "csat"
) -> SurveyAnswer | None:
    """Parse an answer to "rate us 1-5" (`csat`) or "0-10, how likely to recommend" (`nps`).

    None when the text is not clearly one score: the adapter then handles it as a message.
    """
    text = text.strip()
    if not text or len(text) > 500 or _NEGATION.search(text):
        return None
    stars = sum(text.count(c) for c in _STAR_CHARS)
    if stars and not _ANY_NUMBER.search(text):
        if asked != "csat" or stars > 5:
            return None
        comment = text
        for c in _STAR_CHARS:
            comment = comment.replace(c, "")
        return SurveyAnswer(csat=stars, nps=None, comment=comment.strip(" -:,."))
    patterns: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], int]], ...] = (
        (_NPS, lambda _m: 10),
        (_OUT_OF, lambda m: 10 if _value(m.group(2)) == 10 else 5),
        (_STARS, lambda _m: 5),
    )
    for pattern, scale_of in patterns:
        matches = list(pattern.finditer(text))
        if len(matches) > 1:
            return None
        if matches:
            m = matches[0]
            if re.search(r"\d", text[: m.start()] + text[m.end() :]):
                return None  # another number beside the score: ambiguous
            return _answer(
                _value(m.group(1)), scale_of(m), asked, pattern is _NPS, _comment(text, m.span())
            )
    words = len(text.split())
    if words > _MAX_WORDS_FOR_BARE or re.search(r"\d[.,]\d", text):
        return None
    found = list(_LONE.finditer(text))
    if words > _MAX_WORDS_FOR_WORD:
        # "no one helped me" is not a 1: number words count only in a very short answer.
        found = [m for m in found if m.group(1).isdigit()]
    values = {_value(m.group(1)) for m in found}
    rest = text
    for m in reversed(found):
        rest = rest[: m.start()] + rest[m.end() :]
    if len(values) != 1 or re.search(r"\d", rest):
        return None
    m = found[0]
    scale = 5 if asked == "csat" else 10
    return _answer(next(iter(values)), scale, asked, False, _comment(text, m.span()))


def gather_rating_twiml(
    action: str,
    *,
    question: str = (
        "Before you go: how satisfied were you today? Press 1 for very unhappy, up to 5 for "
        "very happy."
    ),
    language: str = "en-US",
    timeout_s: int = 6,
    goodbye: str = "Thank you for calling. Goodbye.",
) -> str:
    """TwiML asking for a 1-5 rating on the keypad; Twilio posts `Digits` to `action`.

    One digit ends the input at once (`numDigits=1`); when the caller presses nothing the call
    says goodbye and hangs up rather than asking again.
    """
    if not 1 <= timeout_s <= 60:
        raise ValueError("timeout_s must be 1-60 seconds")
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'<Gather input="dtmf" numDigits="1" timeout="{timeout_s}" method="POST" '
        f'action={quoteattr(action)} actionOnEmptyResult="false">'
        f"<Say language={quoteattr(language)}>{escape(question)}</Say>"
        "</Gather>"
        f"<Say language={quoteattr(language)}>{escape(goodbye)}</Say><Hangup/>"
        "</Response>"
    )


def parse_keypad_rating(digits: str | None) -> int | None:
    """The 1-5 rating from a `<Gather>`'s `Digits`, or None for anything else (0, *, #, 7)."""
    if digits is None:
        return None
    digits = digits.strip().rstrip("#")
    if len(digits) != 1 or digits not in "12345":
        return None
    return int(digits)
