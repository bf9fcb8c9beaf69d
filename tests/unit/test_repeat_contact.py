"""Repeat contact (issue #18): the signal, the policy rule, and loops found by meaning."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.model import MODEL_SIGNALS, lexical_features
from services.emotion.repeats import (
    FOLLOW_UP_WEIGHT,
    STRONG_WEIGHT,
    RepeatContactFinder,
    RepeatCues,
    load_cues,
)
from services.escalation.loop_calibration import best_threshold, load_pairs, score, similarities
from services.escalation.policy import (
    DEFAULT_POLICY_PATH,
    Policy,
    PolicyError,
    decide,
    load_policy,
)
from services.memory.turns import with_similarity
from shared.embedding import MiniLmEmbedder
from shared.events import (
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    HistoryTurn,
    OpenIssue,
    Role,
    RouteTarget,
    Signal,
    TurnContextualized,
)

START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
THIRD_TIME = "This is the third time I'm asking and I still have no answer!!!"


@pytest.fixture(scope="module")
def finder() -> RepeatContactFinder:
    return RepeatContactFinder()


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY_PATH)


@pytest.fixture(scope="module")
def embedder() -> MiniLmEmbedder:
    return MiniLmEmbedder()


# --- the signal ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        THIRD_TIME,
        "I already told you my order number",
        "Still no answer from anyone",
        "How many times do I have to explain this?",
        "Nobody got back to me",
        "no one has replied to my emails",
        "I keep asking and you keep ignoring me",
        "I'm asking again: where is my refund?",
        "I've called three times about this",
        "I still haven't heard back",
        "for the 4th time, my card is blocked",
        "I'm tired of repeating myself",
        "Im still waiting for an answer",
        "I\u2019ve already explained this to your colleague",
        "THIS IS THE SECOND TIME I AM WRITING",
    ],
)
def test_strong_cues_are_a_repeat_contact_on_their_own(
    finder: RepeatContactFinder, text: str
) -> None:
    signal = finder.find(text)

    assert signal is not None, text
    assert signal.name == "repeat_contact"
    assert signal.weight == STRONG_WEIGHT
    assert signal.evidence


@pytest.mark.parametrize(
    "text",
    ["Hi, any news?", "Any update on my repair?", "Just following up on my complaint"],
)
def test_chasing_cues_weigh_less(finder: RepeatContactFinder, text: str) -> None:
    signal = finder.find(text)

    assert signal is not None
    assert signal.weight == FOLLOW_UP_WEIGHT


@pytest.mark.parametrize(
    "text",
    [
        "again, thanks!",
        "Can you send it again?",
        "Thanks again for your help",
        "Could you say that again please?",
        "I'd love to order again",
        "This is the third time I've ordered from you and I love it",
        "Is the blue jacket in stock again?",
        "What time does the technician come?",
        "Where is my parcel?",
    ],
)
def test_again_alone_is_not_a_repeat_contact(finder: RepeatContactFinder, text: str) -> None:
    assert finder.find(text) is None


def test_the_issue_example_carries_the_signal_through_the_analyzer(
    analyzer: EmotionAnalyzer,
) -> None:
    analysis = analyzer.analyze(THIRD_TIME)

    (signal,) = [s for s in analysis.signals if s.name == "repeat_contact"]
    assert "third time" in signal.evidence.lower()
    assert "still have no answer" in signal.evidence.lower()


def test_the_shipped_model_keeps_its_feature_columns(analyzer: EmotionAnalyzer) -> None:
    # A new contract signal must not shift the columns the shipped model was trained on.
    analysis = analyzer.lexicon.analyze(THIRD_TIME)
    with_cue = lexical_features(THIRD_TIME, analysis)
    without = lexical_features(
        THIRD_TIME,
        analysis.model_copy(
            update={"signals": [s for s in analysis.signals if s.name != "repeat_contact"]}
        ),
    )

    assert "repeat_contact" not in MODEL_SIGNALS
    assert with_cue == without


def test_a_cue_that_needs_backtracking_is_refused() -> None:
    with pytest.raises(ValueError, match="RE2"):
        RepeatContactFinder(RepeatCues(strong=[r"(?<!not )again"]))


def test_the_cue_file_loads(tmp_path: Path) -> None:
    cues = load_cues()
    assert cues.strong
    assert cues.follow_up
    bad = tmp_path / "cues.yaml"
    bad.write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(ValueError, match="mapping"):
        load_cues(bad)


def test_a_long_hostile_message_is_read(finder: RepeatContactFinder) -> None:
    # RE2 runs in linear time; this checks the answer, not the time.
    text = "again " * 600 + "still " * 600 + "x"
    assert finder.find(text) is None
    assert finder.find("I keep asking " + " " * 3000 + "again") is not None


# --- the policy rule ----------------------------------------------------------------------------


def _turn(
    text: str,
    analyzer: EmotionAnalyzer,
    *,
    at: datetime = START,
    recent: list[HistoryTurn] | None = None,
    issues: list[OpenIssue] | None = None,
) -> TurnContextualized:
    return TurnContextualized(
        message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=at),
        emotion=analyzer.analyze(text, [t.text for t in recent or [] if t.role is Role.CUSTOMER]),
        context=ConversationContext(recent_turns=recent or [], open_issues=issues or []),
    )


def _issue(conversation: str, *, updated: datetime) -> OpenIssue:
    return OpenIssue(
        issue_id=uuid.uuid4(),
        category="repair",
        summary="My washing machine repair was supposed to happen today but no technician came",
        conversation_id=conversation,
        opened_at=START - timedelta(days=1),
        updated_at=updated,
    )


def _codes(turn: TurnContextualized, policy: Policy, conversation: str = "conv-2") -> list[str]:
    return [r.code for r in decide(turn, policy, conversation_id=conversation).reasons]


def test_the_third_time_message_goes_to_a_person_at_medium_severity(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    decision = decide(_turn(THIRD_TIME, analyzer), policy, conversation_id="conv-1")

    assert decision.target is RouteTarget.HUMAN
    (reason,) = [r for r in decision.reasons if r.code == "repeat_contact"]
    assert reason.severity == "medium"
    assert "third time" in reason.detail.lower()


@pytest.mark.parametrize(
    "text", ["again, thanks!", "Can you send it again?", "Hi, any news?", "What's the status?"]
)
def test_ordinary_messages_of_a_new_customer_stay_with_the_bot(
    analyzer: EmotionAnalyzer, policy: Policy, text: str
) -> None:
    assert "repeat_contact" not in _codes(_turn(text, analyzer), policy)


def test_chasing_an_issue_open_from_an_earlier_conversation_is_a_repeat_contact(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    earlier = _issue("conv-1", updated=START - timedelta(days=1))
    turn = _turn("Hi, any news?", analyzer, issues=[earlier])

    decision = decide(turn, policy, conversation_id="conv-2")

    assert decision.target is RouteTarget.HUMAN
    (reason,) = [r for r in decision.reasons if r.code == "repeat_contact"]
    assert "repair issue still open from an earlier conversation" in reason.detail
    # The same words in the conversation that opened the issue are not a new contact, and
    # without knowing the conversation the rule cannot tell.
    assert "repeat_contact" not in _codes(turn, policy, conversation="conv-1")
    assert decide(turn, policy).target is RouteTarget.BOT


def test_raising_an_open_issue_again_in_a_new_conversation_is_a_repeat_contact(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    text = "The technician still hasn't come for my washing machine"
    raised_now = _issue("conv-1", updated=START)
    untouched = _issue("conv-1", updated=START - timedelta(hours=3))

    assert "repeat_contact" in _codes(_turn(text, analyzer, issues=[raised_now]), policy)
    assert "repeat_contact" not in _codes(_turn(text, analyzer, issues=[untouched]), policy)


def test_the_rule_can_be_limited_to_what_the_customer_says(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    rules = policy.rules
    assert rules.repeat_contact is not None
    local = policy.model_copy(
        update={
            "rules": rules.model_copy(
                update={
                    "repeat_contact": rules.repeat_contact.model_copy(
                        update={"across_conversations": False}
                    )
                }
            )
        }
    )
    turn = _turn("Hi, any news?", analyzer, issues=[_issue("conv-1", updated=START)])

    assert "repeat_contact" not in _codes(turn, local)
    assert "repeat_contact" in _codes(_turn(THIRD_TIME, analyzer), local)


# --- loops by meaning ---------------------------------------------------------------------------

# Few shared words (token overlap 0.2-0.4), one question: the old rule never saw the loop.
REPHRASED = [
    "Where's my order?",
    "I still haven't received my order, where is it?",
    "Can you tell me where my order is?",
]


def _history(
    texts: list[str], vectors: np.ndarray
) -> tuple[list[HistoryTurn], dict[datetime, np.ndarray]]:
    history: list[HistoryTurn] = []
    meanings: dict[datetime, np.ndarray] = {}
    for i, text in enumerate(texts):
        at = START + timedelta(minutes=2 * i)
        history.append(HistoryTurn(role=Role.CUSTOMER, text=text, at=at))
        meanings[at] = vectors[i]
        history.append(
            HistoryTurn(
                role=Role.BOT, text=f"Let me check that ({i}).", at=at + timedelta(minutes=1)
            )
        )
    return history, meanings


def test_a_question_asked_three_times_in_other_words_is_a_loop(
    analyzer: EmotionAnalyzer, policy: Policy, embedder: MiniLmEmbedder
) -> None:
    vectors = embedder.embed(REPHRASED)
    history, meanings = _history(REPHRASED[:2], vectors)
    compared = with_similarity(history, meanings, vectors[2])
    turn = _turn(REPHRASED[2], analyzer, at=START + timedelta(minutes=5), recent=compared)

    decision = decide(turn, policy, conversation_id="conv-1")

    assert [t.similarity is not None for t in compared] == [True, False, True, False]
    assert decision.target is RouteTarget.HUMAN
    detail = next(r.detail for r in decision.reasons if r.code == "customer_loop")
    assert "2 times (by meaning)" in detail
    # The words alone never saw it: the old rule compared token overlap.
    words_only = _turn(REPHRASED[2], analyzer, recent=history)
    assert "customer_loop" not in [r.code for r in decide(words_only, policy).reasons]


def test_different_questions_on_one_topic_are_not_a_loop(
    analyzer: EmotionAnalyzer, policy: Policy, embedder: MiniLmEmbedder
) -> None:
    texts = ["Where is my parcel?", "Can I change the delivery address?", "How much is delivery?"]
    vectors = embedder.embed(texts)
    history, meanings = _history(texts[:2], vectors)
    turn = _turn(texts[2], analyzer, recent=with_similarity(history, meanings, vectors[2]))

    assert "customer_loop" not in [r.code for r in decide(turn, policy).reasons]


def test_the_loop_threshold_holds_on_the_held_out_pairs(
    policy: Policy, embedder: MiniLmEmbedder
) -> None:
    train, test = load_pairs()
    rule = policy.rules.customer_loop
    assert rule is not None
    assert rule.meaning_similarity is not None
    chosen = best_threshold(similarities(embedder, train), train)
    held_out = score(similarities(embedder, test), test, rule.meaning_similarity)

    assert abs(chosen.threshold - rule.meaning_similarity) <= 0.05, chosen
    # MiniLM separates loose rephrasings from same-topic questions only so far (policy.yaml
    # has the figures); these floors catch a worse embedder or a threshold moved off them.
    assert held_out.precision >= 0.6, held_out
    assert held_out.recall >= 0.75, held_out


def test_history_without_cached_meanings_keeps_no_similarity() -> None:
    turn = HistoryTurn(role=Role.CUSTOMER, text="hello there friend", at=START)
    vector = np.full(4, 0.5, dtype=np.float32)

    assert with_similarity([turn], {}, vector)[0].similarity is None
    other = {START: np.ones(3, dtype=np.float32)}
    assert with_similarity([turn], other, vector)[0].similarity is None
    assert with_similarity([turn], {START: vector}, vector)[0].similarity == 1.0


def test_an_old_event_without_similarity_still_parses() -> None:
    turn = HistoryTurn.model_validate({"role": "customer", "text": "hi", "at": START.isoformat()})
    assert turn.similarity is None
    assert "similarity" not in turn.model_dump_json(exclude_none=True)
    assert Signal(name="repeat_contact", evidence="x").name == "repeat_contact"
    assert EmotionAnalysis.model_fields["signals"] is not None


@pytest.mark.parametrize(
    ("rule", "setting"),
    [
        ("repeat_contact", "min_weight: 1.5"),
        ("repeat_contact", "min_wieght: 1.0"),
        ("customer_loop", "min_repeats: 2, similarity: 0.8, meaning_similarity: 1.2"),
    ],
)
def test_bad_settings_of_the_new_rules_are_refused(tmp_path: Path, rule: str, setting: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"version: 1\nname: p\nrules:\n  {rule}: {{enabled: true, {setting}}}\n", encoding="utf-8"
    )
    with pytest.raises(PolicyError, match=rule):
        load_policy(path)
