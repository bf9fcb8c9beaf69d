"""Closing-question answers parsed from free text, and the keypad survey's TwiML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from shared.survey import (
    SurveyAnswer,
    gather_rating_twiml,
    parse_keypad_rating,
    parse_survey_answer,
)


@pytest.mark.parametrize(
    ("text", "csat", "nps"),
    [
        ("5", 5, None),
        ("five", 5, None),
        ("Five!!", 5, None),
        ("5/5", 5, None),
        ("2 / 5", 2, None),
        ("4 out of 5", 4, None),
        ("4 stars", 4, None),
        ("\u2b50\u2b50\u2b50", 3, None),
        ("9 out of 10", 5, None),
        ("3/10", 2, None),
        ("NPS 8", 4, 8),
        ("nps: 9 great service", 5, 9),
        ("I'd give it a 4", 4, None),
    ],
)
def test_a_csat_answer_in_its_many_forms(text: str, csat: int, nps: int | None) -> None:
    answer = parse_survey_answer(text, "csat")
    assert answer is not None, text
    assert (answer.csat, answer.nps) == (csat, nps)


@pytest.mark.parametrize(
    ("text", "nps"),
    [("8", 8), ("0", 0), ("ten", 10), ("9 out of 10", 9), ("NPS 7", 7), ("10/10!", 10)],
)
def test_an_nps_answer(text: str, nps: int) -> None:
    answer = parse_survey_answer(text, "nps")
    assert answer is not None, text
    assert answer.nps == nps
    assert answer.csat is None  # an answer to the NPS question is not a satisfaction score


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no one helped me",  # a number word in a sentence is not a score
        "my order 12345 is late",
        "order 48213, 5 days late",
        "3 or 4",
        "not 5",
        "never a 5",
        "4.5",
        "10",  # out of range for a 1-5 question: ask again rather than guess
        "0",
        "6/5",
        "thanks",
        "I called 3 times about 2 orders",
        "x" * 600,
    ],
)
def test_anything_that_is_not_clearly_one_score_is_not_one(text: str) -> None:
    assert parse_survey_answer(text, "csat") is None


def test_the_comment_beside_the_score_is_kept() -> None:
    assert parse_survey_answer("4 - the wait was long", "csat") == SurveyAnswer(
        csat=4, nps=None, comment="the wait was long"
    )
    answer = parse_survey_answer("2/5 rude agent", "csat")
    assert answer is not None
    assert answer.comment == "rude agent"


def test_the_keypad_survey_is_well_formed_twiml_with_the_action_escaped() -> None:
    action = "https://cbd.example/v1/channels/twilio/voice/rating?call=CA1&tenant=a<b"
    root = ET.fromstring(gather_rating_twiml(action, language="en-GB"))  # noqa: S314 (ours)
    assert root.tag == "Response"
    gather = root.find("Gather")
    assert gather is not None
    assert gather.attrib["input"] == "dtmf"
    assert gather.attrib["numDigits"] == "1"
    assert gather.attrib["action"] == action  # escaped in the XML, exact once parsed
    say = gather.find("Say")
    assert say is not None
    assert "1" in (say.text or "")
    assert say.attrib["language"] == "en-GB"
    # No input: say goodbye and hang up instead of looping.
    assert [child.tag for child in root] == ["Gather", "Say", "Hangup"]
    with pytest.raises(ValueError, match="timeout"):
        gather_rating_twiml(action, timeout_s=0)


@pytest.mark.parametrize(
    ("digits", "rating"),
    [
        ("1", 1),
        ("5", 5),
        ("3#", 3),
        (None, None),
        ("", None),
        ("0", None),
        ("6", None),
        ("*", None),
        ("45", None),
    ],
)
def test_keypad_digits(digits: str | None, rating: int | None) -> None:
    assert parse_keypad_rating(digits) == rating
