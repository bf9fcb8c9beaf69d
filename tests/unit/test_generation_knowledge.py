"""Unit tests for knowledge retrieval, playbook selection, variants and the circuit breaker."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.generation.breaker import BreakerState, CircuitBreaker
from services.generation.knowledge import KnowledgeBase, parse_markdown, tokenize
from services.generation.playbooks import Playbook, PlaybookLibrary
from services.generation.settings import PACKAGE_DIR
from services.generation.variants import Variant, assign_variant, bucket
from shared.events import EmotionLabel

KNOWLEDGE_DIR = PACKAGE_DIR / "knowledge"


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load(KNOWLEDGE_DIR, "demo")


@pytest.fixture(scope="module")
def library() -> PlaybookLibrary:
    return PlaybookLibrary.load(PACKAGE_DIR / "playbooks.yaml")


# --- knowledge -----------------------------------------------------------------------------


def test_markdown_sections_become_entries() -> None:
    entries = parse_markdown(
        "cards", "# Cards\nintro for people\n\n## Card colours\nBlue and green.\n\n## Empty\n"
    )
    assert [(e.id, e.title, e.text) for e in entries] == [
        ("cards/card-colours", "Card colours", "Blue and green.")
    ]


def test_tokenize_stems_and_drops_stop_words() -> None:
    assert tokenize("The refunds were REFUNDED, charging charges") == [
        "refund",
        "refund",
        "charg",
        "charg",
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Can I get my debit card in purple?", "cards/debit-card-designs-and-colours"),
        ("my parcel has not arrived yet", "orders/late-or-missing-parcels"),
        ("I was charged twice", "billing/unexpected-or-double-charges"),
        ("how do I reset my password", "account/locked-out-or-password-reset"),
        ("someone used my card, is it fraud?", "cards/fraud-and-transactions-you-did-not-make"),
        ("the kettle arrived broken and damaged", "orders/damaged-or-faulty-items"),
    ],
)
def test_retrieval_finds_the_entry_a_question_needs(
    kb: KnowledgeBase, query: str, expected: str
) -> None:
    hits = kb.retrieve(query, k=3)
    assert hits
    assert hits[0].entry.id == expected
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_retrieval_returns_nothing_for_small_talk_or_blank(kb: KnowledgeBase) -> None:
    assert kb.retrieve("hello") == []
    assert kb.retrieve("   ") == []
    assert kb.retrieve("debit card purple", k=0) == []


def test_duplicate_titles_are_refused(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.md").write_text("## Same\none\n\n## Same\ntwo\n")
    with pytest.raises(ValueError, match="duplicate"):
        KnowledgeBase.load(tmp_path, "t")


def test_datasheets_are_not_knowledge(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "README.md").write_text("## About\nfor people\n")
    (tmp_path / "t" / "faq.md").write_text("## Hours\nopen 9 to 5\n")
    assert [e.id for e in KnowledgeBase.load(tmp_path, "t").entries] == ["faq/hours"]


# --- playbooks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "emotion", "expected"),
    [
        ("Do you have this jumper in purple?", EmotionLabel.NEUTRAL, "unavailable_product"),
        ("I want my money back", EmotionLabel.ANGER, "refund_denied"),
        ("My parcel is late again", EmotionLabel.ANXIETY, "delivery_delay"),
        ("I was double charged", EmotionLabel.ANGER, "billing_dispute"),
        ("My mother passed away last week", EmotionLabel.SADNESS, "bereavement"),
        (
            "I think I've been scammed, there's an unauthorized payment",
            EmotionLabel.ANXIETY,
            "fraud_fear",
        ),
        ("I lost my card", EmotionLabel.ANXIETY, "fraud_fear"),
        ("It arrived broken", EmotionLabel.FRUSTRATION, "damaged_item"),
        ("I can't log in", EmotionLabel.CONFUSION, "account_access"),
        ("Thank you so much, it's perfect!", EmotionLabel.JOY, "celebration"),
    ],
)
def test_playbook_selection(
    library: PlaybookLibrary, text: str, emotion: EmotionLabel, expected: str
) -> None:
    match = library.select(text, emotion)
    assert match is not None
    assert match.playbook.id == expected
    assert match.cues


def test_no_cue_no_playbook_whatever_the_emotion(library: PlaybookLibrary) -> None:
    assert library.select("hmm", EmotionLabel.SADNESS) is None


def test_the_previous_message_keeps_the_scenario(library: PlaybookLibrary) -> None:
    match = library.select("any news?", EmotionLabel.NEUTRAL, previous="my parcel is late")
    assert match is not None
    assert match.playbook.id == "delivery_delay"


def test_emotion_breaks_a_tie() -> None:
    a = Playbook(id="aa", title="A", cues=["late"], emotions=[EmotionLabel.JOY], strategy="a")
    b = Playbook(id="bb", title="B", cues=["late"], emotions=[EmotionLabel.ANGER], strategy="b")
    lib = PlaybookLibrary([a, b])
    assert lib.select("late", EmotionLabel.ANGER).playbook.id == "bb"  # type: ignore[union-attr]
    assert lib.select("late", EmotionLabel.JOY).playbook.id == "aa"  # type: ignore[union-attr]


def test_duplicate_playbook_ids_are_refused() -> None:
    p = Playbook(id="aa", title="A", cues=["x"], strategy="a")
    with pytest.raises(ValueError, match="duplicate"):
        PlaybookLibrary([p, p])


def test_a_bad_playbook_file_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("playbooks:\n  - id: x\n    title: no cues\n    strategy: s\n    cues: []\n")
    with pytest.raises(ValueError, match="cues"):
        PlaybookLibrary.load(path)


# --- variants ------------------------------------------------------------------------------


def test_bucket_is_stable_and_salted() -> None:
    assert bucket("conv-1") == bucket("conv-1")
    assert 0 <= bucket("conv-1") < 1
    assert bucket("conv-1", "exp-2") != bucket("conv-1")


def test_assign_variant_extremes() -> None:
    assert assign_variant("c", 0.0) is Variant.CARE
    assert assign_variant("c", 1.0) is Variant.BASELINE


# --- circuit breaker -----------------------------------------------------------------------


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read fresh (mypy would otherwise narrow the property)."""
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_recovers() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=10, clock=clock)

    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()

    clock.now = 10.0
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()  # one trial
    assert not breaker.allow()  # and only one
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()


def test_a_failed_trial_opens_the_breaker_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    clock.now = 9.0
    assert not breaker.allow()


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED


def test_a_released_trial_lets_another_try() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=1, clock=clock)
    breaker.record_failure()
    clock.now = 1.0
    assert breaker.allow()
    breaker.release_trial()
    assert breaker.allow()
