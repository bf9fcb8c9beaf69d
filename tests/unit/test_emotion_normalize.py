"""Chat and social text: links, handles, hashtags and emoji made plain before anything reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.emotion import corpora
from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.normalize import EmojiMap, Normalizer, load_emoji
from shared.events import EmotionLabel

BANKING77_TEST = Path(__file__).parents[2] / "shared" / "data" / "intents" / "banking77_test.jsonl"


@pytest.fixture(scope="module")
def normalizer() -> Normalizer:
    return Normalizer()


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        (
            "@AcmeBank where is my refund? https://t.co/Ab12 #WorstServiceEver",
            "where is my refund? Worst Service Ever",
        ),
        ("see www.example.com/help, it says nothing", "see it says nothing"),
        ("#still_waiting for my card", "still waiting for my card"),
        ("order #12345 has not arrived", "order #12345 has not arrived"),
        ("write to ann@example.com please", "write to ann@example.com please"),
        ("meeting at 10:30 tomorrow", "meeting at 10:30 tomorrow"),
        ("refund still not here 😡", "refund still not here furious"),
        ("thanks 👍🏽", "thanks great"),
        ("thanks:)", "thanks happy"),
        ("my parcel is lost :(", "my parcel is lost sad"),
        ("parcel 📦 arrived", "parcel arrived"),
    ],
)
def test_chat_text_is_made_plain(normalizer: Normalizer, text: str, plain: str) -> None:
    assert normalizer.normalize(text).text == plain


def test_faces_are_kept_for_the_explanation(normalizer: Normalizer) -> None:
    assert normalizer.normalize("still broken 😡😡 :(").faces == ("😡", "😡", ":(")


def test_the_shipped_emoji_file_covers_every_feeling() -> None:
    words = set(load_emoji().emoji.values()) | set(load_emoji().emoticons.values())
    assert {"furious", "annoyed", "worried", "sad", "confused", "happy"} <= words


@pytest.mark.parametrize(
    "bad",
    [
        {"emoji": {"ab": "happy"}, "emoticons": {}},
        {"emoji": {"😡": "Furious!"}, "emoticons": {}},
        {"emoji": {}, "emoticons": {"lol": "happy"}},
        {"emoji": {}, "emoticons": {": )": "happy"}},
        {"emoji": {}, "emoticons": {}, "extra": {}},
    ],
)
def test_a_bad_emoji_file_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="validation error"):
        EmojiMap.model_validate(bad)


@pytest.mark.parametrize(
    "text",
    [
        "@AcmeBank @AcmeHelp my card got declined again https://t.co/xyz #fail 😡",
        "Absolute queens! ❤🏳️‍🌈🏳️‍🌈🏳️‍🌈",
        "#cooking #uni #urchin #local #tidetotable #truecooks #seafood #cheflife",
        "those comments are perplexing",
        "Not journalists...media activists.",
        "😡😡😡",
    ],
)
def test_english_chat_text_is_readable(analyzer: EmotionAnalyzer, text: str) -> None:
    assert analyzer.unreadable(text) is None


def test_only_links_and_handles_is_an_empty_message(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("@AcmeBank https://t.co/Ab12")
    assert result.label is EmotionLabel.NEUTRAL
    assert result.confidence == 0.0


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("😡😡", EmotionLabel.ANGER),
        ("my flight is tomorrow and the ticket is still not here 😰", EmotionLabel.ANXIETY),
        ("all sorted now 👍", EmotionLabel.JOY),
        ("🤔 what does this fee mean", EmotionLabel.CONFUSION),
    ],
)
def test_emoji_are_evidence(analyzer: EmotionAnalyzer, text: str, label: EmotionLabel) -> None:
    result = analyzer.analyze(text)
    assert result.label is label, result.explanation
    assert "emoji:" in result.explanation


def test_no_public_english_test_message_is_refused(analyzer: EmotionAnalyzer) -> None:
    # Banking77 (customers' banking questions) and GoEmotions (Reddit comments) are English:
    # before the language identifier, 35 of GoEmotions' test split were refused.
    banking = [json.loads(line)["text"] for line in BANKING77_TEST.open(encoding="utf-8")]
    reddit = [ex.text for ex in corpora.load_public("goemotions", "test")]
    refused = [t for t in banking + reddit if analyzer.unreadable(t) is not None]
    assert len(banking) > 1000
    assert len(reddit) > 4000
    assert refused == []
