"""Hostile text cannot make a turn slow: every pattern customer text meets stays fast.

Each case is a long (4,000 characters) input shaped against the patterns: trigger words
followed by runs of whitespace, triggers repeated without their terminators, unclosed tags.
Before RE2, "don't" followed by 4,000 spaces and a letter took 1.7-2.6 s in memory's extraction
alone. The bound asserted here, 50 ms a call, is a generous ceiling on a worst case, not a
micro-benchmark (bench/adversarial_text.py prints the figures). What is timed is the CPU time
of the calling thread, so other processes on a busy machine do not count against it, and each
call is timed up to three times with the fastest counting.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.escalation.policy import DEFAULT_POLICY_PATH, decide, load_policy, similarity
from services.generation.care import Sources, grounding_findings
from services.generation.guardrails import StreamGuard
from services.generation.handlers import build_prompting
from services.generation.playbooks import PlaybookLibrary
from services.generation.prompt import quote, quote_customer
from services.generation.settings import GenerationSettings
from services.ingest.channels.formatting import SMS_LIMIT, plain_text, speakable, split_message
from services.memory.extraction import RuleExtractor
from shared.events import (
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    TurnContextualized,
)
from shared.survey import parse_survey_answer
from shared.untrusted import normalize

LENGTH = 4000
BOUND_S = 0.050

TRIGGERS = [
    "don't",
    "do not",
    "stop",
    "never",
    "no more",
    "I like",
    "I really love",
    "I don't like",
    "I hate",
    "call me",
    "I go by",
    "my name is",
    "my address is",
    "I've moved to",
    "I'm allergic to",
    "my daughter's birthday is",
    "my birthday is",
    "contact me by",
    "email me",
    "I'd prefer",
    "I have two",
    "I'm a",
    "my email is a",
    "my phone is 1",
    "it has been",
    "can't log in",
    "<",
    "</",
    "< / customer",
    "<customer",
    "\uff1c\uff0f",
    "refund",
    "charged twice",
    "and I",
    # Markdown a reply can carry (the channel formatter's emphasis rule was quadratic).
    "*a",
    "**a",
    "_a",
]
FILLERS = [" ", "\t", "\n", "  \n", "\u3000", "\u200b", ",", ", ", "a", "a ", ". ", "!", "-", "'"]


def _stretch(unit: str) -> str:
    return (unit * (LENGTH // max(len(unit), 1) + 1))[:LENGTH]


def _cases() -> list[str]:
    cases: list[str] = []
    for trigger in TRIGGERS:
        for filler in FILLERS:
            # A trigger, a long run, then a letter: the shape that backtracks.
            run = filler * ((LENGTH - len(trigger) - 1) // len(filler))
            cases.append(f"{trigger}{run}x"[:LENGTH])
        cases.append(_stretch(f"{trigger} "))
        cases.append(_stretch(f"{trigger} ab. "))
        cases.append(_stretch(f"{trigger} x and i "))
    # Runs that a pattern anchored at the end re-read from every start inside them: a long
    # word then a space, number-like groups then a letter, dashes then a letter.
    cases.append("a" * (LENGTH - 1) + " ")
    for unit in ("1 ", "A1 ", "- ", "1-"):
        cases.append(_stretch(unit)[: LENGTH - 1] + "x")
    return cases


CASES = _cases()

_extractor = RuleExtractor()
_playbooks = PlaybookLibrary.load(GenerationSettings().playbooks_path)
_policy = load_policy(DEFAULT_POLICY_PATH)
_, _rails = build_prompting(GenerationSettings(canary="zq5e1ec7ab1e99"))


def _stream(text: str) -> str:
    # The whole reply as one streamed piece, then the end of the stream: each call reads
    # the text once (a reply streamed token by token pays this per token).
    guard = StreamGuard(_rails)
    return guard.feed(text) + guard.finish()[0]


def _turn(text: str) -> TurnContextualized:
    neutral = EmotionAnalysis(
        label=EmotionLabel.NEUTRAL,
        scores={EmotionLabel.NEUTRAL: 1.0},
        sentiment=0.0,
        intensity=0.0,
        model="test",
    )
    return TurnContextualized(
        message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=datetime.now(UTC)),
        emotion=neutral,
        context=ConversationContext(),
    )


PATHS: dict[str, Callable[[str], object]] = {
    "memory extraction": lambda text: _extractor.extract(text, sentiment=-0.5),
    "prompt fence (customer)": quote_customer,
    "prompt fence (memory)": lambda text: quote("memory", text),
    "untrusted normalisation": normalize,
    "playbook cues": lambda text: _playbooks.select(text, EmotionLabel.ANGER, previous=text),
    "escalation policy": lambda text: decide(_turn(text), _policy),
    "escalation loop similarity": lambda text: similarity(text, text[::-1]),
    "reply guardrails (streamed)": _stream,
    # The reply's facts against sources that hold the customer's words.
    "care grounding": lambda text: grounding_findings(text, Sources.of([text])),
    "survey answer": lambda text: parse_survey_answer(text, "csat"),
    "channel formatting (SMS, voice)": lambda text: (
        split_message(plain_text(text), SMS_LIMIT),
        speakable(text, 320),
    ),
}


def _fastest(path: Callable[[str], object], text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        path(text)
        best = min(best, time.thread_time() - start)
        if best <= BOUND_S:
            break
    return best


@pytest.mark.parametrize("name", list(PATHS))
def test_pathological_inputs_stay_fast(name: str) -> None:
    path = PATHS[name]
    slow = [
        (round(took * 1000, 1), text[:30])
        for text in CASES
        if (took := _fastest(path, text)) > BOUND_S
    ]
    assert not slow, f"{name}: {len(slow)} inputs over {BOUND_S * 1000:.0f} ms: {slow[:5]}"


def test_the_case_that_was_slow_is_among_the_cases() -> None:
    assert "don't" + " " * (LENGTH - 6) + "x" in CASES


_fragment = st.sampled_from(TRIGGERS + FILLERS + ["tea", "Bob", "12 Oak Road", "x", "."])


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(unit=st.lists(_fragment, min_size=1, max_size=8).map("".join).filter(bool))
def test_any_repeated_mix_of_triggers_stays_fast(unit: str) -> None:
    text = _stretch(unit)
    for name, path in PATHS.items():
        took = _fastest(path, text)
        assert took <= BOUND_S, f"{name}: {took * 1000:.0f} ms on {unit!r} x {LENGTH}"
