"""Reply formatting for SMS, WhatsApp and voice: hostile markdown costs linear time.

Replies are the model's or an agent's text, and either can quote the customer, so the
formatter's patterns meet text someone else chose. The emphasis pattern used to carry a
back-reference that Python's `re` ran in quadratic time (`"*a " * 1333` took seconds).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from services.ingest.channels import formatting
from services.ingest.channels.formatting import SMS_LIMIT, plain_text, speakable, split_message
from shared.linear_re import LinearPattern

# The formatter as it was, on short replies only (where it is fast): the oracle for what
# plain text must look like.
_OLD_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1")

HOSTILE_UNITS = ["*a ", "**a ", "_a ", "`a ", "~~a ", "[a](", "[", "*", "é*a ", "**a\u3000"]


def test_every_formatting_pattern_is_linear() -> None:
    patterns = {
        name: value
        for name, value in vars(formatting).items()
        if isinstance(value, (re.Pattern, LinearPattern))
    }
    assert patterns, "the formatter has patterns"
    backtracking = sorted(n for n, v in patterns.items() if not isinstance(v, LinearPattern))
    assert not backtracking, f"patterns run by Python's backtracking re: {backtracking}"


def _cpu(call: Callable[[str], object], text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        call(text)
        best = min(best, time.thread_time() - start)
    return best


def _format_all(text: str) -> None:
    split_message(plain_text(text), SMS_LIMIT)
    speakable(text, 320)


@pytest.mark.parametrize("unit", HOSTILE_UNITS)
def test_hostile_markdown_costs_time_in_proportion_to_its_length(unit: str) -> None:
    # Eight times the text may cost about eight times the work, never the 64 times of a
    # quadratic pass. What is compared is the CPU time of this thread for the same call on
    # two lengths, so the machine's speed and load cancel out; the margin (3x) absorbs noise.
    short, long = (unit * 2000)[:2000], (unit * 16000)[:16000]
    floor = 0.001  # below this, fixed costs dominate the short run
    ratio = _cpu(_format_all, long) / max(_cpu(_format_all, short), floor)
    assert ratio < 24, f"{unit!r}: 8x the text cost {ratio:.0f}x the time"


@pytest.mark.parametrize(
    "text",
    [
        "**Sorry** about that!",
        "I *really* mean it, and __this__ too.",
        "Use `code` or ~~old~~ new.",
        "**bold *italic* inside** here",
        "a snake_case_name stays readable",
        "Price: 2 * 3 = 6 and 4 * 5",
        "line one *starts\nand ends* on line two",
        "**Order 12345** ships *today*; track it _online_.",
    ],
)
def test_emphasis_comes_out_as_it_did(text: str) -> None:
    expected = text
    for _ in range(2):
        expected = _OLD_EMPHASIS.sub(r"\2", expected)
    assert plain_text(text) == expected.strip()


def test_an_emphasis_holding_its_own_delimiter_is_left_alone() -> None:
    # The old rule turned "** spaced **" into "* spaced *"; Markdown emphasises neither.
    # The double delimiters themselves go: a phone would show them as asterisks.
    assert plain_text("** spaced ** and * spaced *") == "spaced  and * spaced *"
    assert plain_text("*not closed and ** not either") == "*not closed and  not either"


def test_a_reply_cut_inside_bold_shows_no_asterisks() -> None:
    # The small model's reply, cut at its token limit, as CI's e2e run received it.
    cut = "Here is what I found:\n\n1. **"
    assert plain_text(cut) == "Here is what I found:\n\n1."
    assert "**" not in plain_text("**Refund** is on its way. ~~Old~~ __new__ **track")


def test_unicode_spaces_still_break_emphasis_and_links() -> None:
    assert plain_text("*\u00a0not emphasis\u00a0*") == "*\u00a0not emphasis\u00a0*"
    spoken = speakable("See https://www.parcels.example/track\u00a0now.", 200)
    assert spoken == "See the parcels.example website now."
