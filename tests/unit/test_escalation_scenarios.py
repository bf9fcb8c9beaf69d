"""Scenario tests for the escalation policy, with the real emotion analyzer and trajectory.

Each conversation is played turn by turn the way the pipeline plays it: the emotion service
analyses the message against the customer's earlier texts and advances the conversation's
mood, memory attaches the turns so far (bot replies included), and escalation decides with
the shipped policy.yaml. The thresholds in that file were calibrated on these scenarios.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.trajectory import ConversationMood, previous_texts, record_turn
from services.escalation.policy import (
    DEFAULT_POLICY_PATH,
    NO_RULE_MATCHED,
    Policy,
    PolicyError,
    PolicyStore,
    decide,
    load_policy,
    similarity,
)
from shared.events import (
    ConversationContext,
    CustomerMessage,
    EmotionLabel,
    EmotionTrajectory,
    HistoryTurn,
    Role,
    RouteTarget,
    RoutingDecision,
    Signal,
    Trend,
    TurnContextualized,
)

VARIED_REPLIES = [
    "Thanks, let me check that for you.",
    "Here is what I found on our help pages.",
    "Good question: the details are on your order confirmation.",
]
START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
MEMORY_WINDOW = 12
"""Memory's default `recent_turns`: how many earlier turns the context carries."""

ALL_RULES = [
    "explicit_request",
    "strong_emotion",
    "distress",
    "worsening",
    "escalation_risk",
    "customer_loop",
    "repeat_contact",
    "bot_loop",
    "no_resolution",
    "sensitive_topic",
    "high_value_negative",
    "generation_flags",
]


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY_PATH)


class Conversation:
    """Plays a conversation through the real emotion analysis, trajectory and memory window."""

    def __init__(self, analyzer: EmotionAnalyzer) -> None:
        self.analyzer = analyzer
        self.mood = ConversationMood()
        self.history: list[HistoryTurn] = []
        self.clock = START

    def _tick(self) -> datetime:
        self.clock += timedelta(seconds=30)
        return self.clock

    def customer(self, text: str) -> TurnContextualized:
        """The contextualized event for the customer's next message (then remembered)."""
        turn_id = uuid.uuid4()
        at = self._tick()
        analysis = self.analyzer.analyze(text, previous_texts(self.mood, str(turn_id)))
        trajectory = record_turn(self.mood, str(turn_id), text, analysis)
        # Memory attaches the turns before this one; this turn joins the history afterwards.
        recent = self.history[-MEMORY_WINDOW:]
        turn = TurnContextualized(
            message=CustomerMessage(turn_id=turn_id, text=text, received_at=at),
            emotion=analysis,
            trajectory=trajectory,
            context=ConversationContext(recent_turns=recent, source="cache" if recent else "empty"),
        )
        self.history.append(HistoryTurn(role=Role.CUSTOMER, text=text, at=at))
        return turn

    def bot(self, text: str) -> None:
        """The bot's reply, as memory records it."""
        self.history.append(HistoryTurn(role=Role.BOT, text=text, at=self._tick()))


def play(
    analyzer: EmotionAnalyzer,
    policy: Policy,
    customer_texts: Sequence[str],
    bot_replies: Sequence[str] = (),
    **kwargs: Any,
) -> list[RoutingDecision]:
    """Decide every customer turn; the bot answers each with the next scripted reply.

    Past the script, the bot's replies vary (a real bot's do), so they never look like a loop.
    """
    conversation = Conversation(analyzer)
    decisions = []
    replies = iter([*bot_replies, *islice(cycle(VARIED_REPLIES), len(customer_texts))])
    for text in customer_texts:
        decisions.append(decide(conversation.customer(text), policy, **kwargs))
        conversation.bot(next(replies))
    return decisions


def codes(decision: RoutingDecision) -> list[str]:
    return [reason.code for reason in decision.reasons]


def detail(decision: RoutingDecision, code: str) -> str:
    return next(reason.detail for reason in decision.reasons if reason.code == code)


FRUSTRATED = [
    "My internet has been down since this morning.",
    "I already restarted the router twice, it's still down.",
    "This is the third time I'm telling you, it's STILL not working!!",
]
CALM = [
    "What are your opening hours?",
    "Do you deliver to Leeds?",
    "Thanks, and how much is delivery?",
    "Great, thank you!",
    "Can I pay by card?",
]
CALM_REPLIES = [
    "We're open 9am to 6pm, Monday to Saturday.",
    "Yes, we deliver to Leeds.",
    "Delivery is free on orders over £30, otherwise £3.99.",
    "You're welcome! Anything else?",
    "Yes, we accept all major cards.",
]
BEREAVED = "My father passed away last week and I need to close his account"
REPEATED = ["Where is my order 12345?", "Where is my order 12345?", "where is my order #12345??"]
STUCK_BOT = "I'm sorry to hear that. Please try resetting your password from the login page."
LONG_CALM = [
    "What are your opening hours?",
    "Do you deliver to Leeds?",
    "How much is delivery?",
    "Can I pay by card?",
    "Do you have this jacket in blue?",
    "Is there a size guide?",
    "Can I collect in store?",
    "Do you ship abroad?",
    "How long does delivery take?",
    "Can I change my delivery address?",
    "Do you offer gift wrapping?",
]


# --- the scenarios -----------------------------------------------------------------------------


def test_explicit_request_escalates_on_that_very_turn(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    first, second = play(
        analyzer, policy, ["Hi, I have a question about my bill.", "let me talk to a person"]
    )

    assert first.target is RouteTarget.BOT
    assert second.target is RouteTarget.HUMAN
    assert codes(second) == ["explicit_request"]
    assert "let me talk to a person" in detail(second, "explicit_request")
    assert second.policy == "default-v1"


def test_rising_frustration_escalates_by_the_third_turn(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    decisions = play(analyzer, policy, FRUSTRATED)

    assert decisions[0].target is RouteTarget.BOT
    assert RouteTarget.HUMAN in {d.target for d in decisions}
    assert decisions[2].target is RouteTarget.HUMAN
    assert "worsening" in codes(decisions[2])
    assert detail(decisions[2], "worsening") == "negative streak 3 \u2265 3"


def test_calm_customer_never_escalates(analyzer: EmotionAnalyzer, policy: Policy) -> None:
    decisions = play(analyzer, policy, CALM, CALM_REPLIES)

    for decision in decisions:
        assert decision.target is RouteTarget.BOT
        assert codes(decision) == [NO_RULE_MATCHED]


def test_bereavement_escalates_as_a_sensitive_topic(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    (decision,) = play(analyzer, policy, [BEREAVED])

    assert decision.target is RouteTarget.HUMAN
    assert "sensitive_topic" in codes(decision)
    evidence = detail(decision, "sensitive_topic")
    assert "vulnerability" in evidence
    assert "passed away" in evidence


def test_a_repeating_bot_escalates_with_bot_loop(analyzer: EmotionAnalyzer, policy: Policy) -> None:
    texts = ["I can't log in to my account.", "I did that, it didn't help.", "Can you help me?"]
    decisions = play(analyzer, policy, texts, [STUCK_BOT, STUCK_BOT])

    # Only one bot reply before the second turn: nothing to compare yet.
    assert "bot_loop" not in codes(decisions[1])
    assert decisions[2].target is RouteTarget.HUMAN
    assert "bot_loop" in codes(decisions[2])
    assert "100%" in detail(decisions[2], "bot_loop")


def test_varied_bot_replies_are_not_a_loop(analyzer: EmotionAnalyzer, policy: Policy) -> None:
    texts = ["I can't log in to my account.", "I did that, it didn't help.", "Can you help me?"]
    replies = [STUCK_BOT, "Let me check whether your account is locked; one moment please."]

    decisions = play(analyzer, policy, texts, replies)

    assert all("bot_loop" not in codes(d) for d in decisions)


def test_a_repeating_customer_escalates_with_customer_loop_by_the_repeat_count(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    replies = ["Let me look that up for you.", "It is on its way and should arrive soon."]
    decisions = play(analyzer, policy, REPEATED, replies)

    assert "customer_loop" not in codes(decisions[0])
    # The second ask is one repeat: below min_repeats (2), though the analyzer already flags it.
    assert any(s.name == "repetition" for s in _analyses(analyzer, REPEATED)[1].signals)
    assert "customer_loop" not in codes(decisions[1])
    assert decisions[2].target is RouteTarget.HUMAN
    assert "customer_loop" in codes(decisions[2])
    assert "2 times \u2265 2" in detail(decisions[2], "customer_loop")


def _analyses(analyzer: EmotionAnalyzer, texts: Sequence[str]) -> list[Any]:
    return [analyzer.analyze(text, texts[:i]) for i, text in enumerate(texts)]


def test_customer_loop_threshold_comes_from_the_policy(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    rules = policy.rules
    assert rules.customer_loop is not None
    eager = policy.model_copy(
        update={
            "rules": rules.model_copy(
                update={"customer_loop": rules.customer_loop.model_copy(update={"min_repeats": 1})}
            )
        }
    )

    decisions = play(analyzer, eager, REPEATED[:2])

    assert "customer_loop" in codes(decisions[1])
    assert "1 times \u2265 1" in detail(decisions[1], "customer_loop")


def test_short_acknowledgements_are_not_a_customer_loop(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    decisions = play(analyzer, policy, ["yes", "yes", "yes"])

    assert all("customer_loop" not in codes(d) for d in decisions)


def test_too_many_turns_escalates_with_no_resolution(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    decisions = play(analyzer, policy, LONG_CALM)

    assert len(decisions) == 11
    for decision in decisions[:10]:
        assert decision.target is RouteTarget.BOT, decision
    assert decisions[10].target is RouteTarget.HUMAN
    assert codes(decisions[10]) == ["no_resolution"]
    assert detail(decisions[10], "no_resolution") == "11 customer turns > 10"


def test_no_resolution_counts_recent_turns_without_a_trajectory(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    conversation = Conversation(analyzer)
    for text in LONG_CALM[:10]:
        conversation.customer(text)
    last = conversation.customer(LONG_CALM[10]).model_copy(update={"trajectory": None})

    decision = decide(last, policy)

    assert codes(decision) == ["no_resolution"]


def test_high_value_negative_needs_a_listed_tier_and_negative_sentiment(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    negative = Conversation(analyzer).customer("My order arrived damaged.")
    calm = Conversation(analyzer).customer("Can I pay by card?")
    assert negative.emotion.sentiment <= -0.3

    assert decide(negative, policy).target is RouteTarget.BOT
    assert decide(negative, policy, customer_tier="bronze").target is RouteTarget.BOT
    assert decide(calm, policy, customer_tier="gold").target is RouteTarget.BOT
    for tier in ("gold", "Platinum"):
        decision = decide(negative, policy, customer_tier=tier)
        assert decision.target is RouteTarget.HUMAN
        assert codes(decision) == ["high_value_negative"]
        assert f"{tier.lower()} customer" in detail(decision, "high_value_negative")


def test_generation_flags_fire_only_for_listed_flags(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    turn = Conversation(analyzer).customer("Can I pay by card?")

    assert decide(turn, policy).target is RouteTarget.BOT
    assert decide(turn, policy, last_reply_flags=["streamed"]).target is RouteTarget.BOT
    decision = decide(turn, policy, last_reply_flags=["needs_human", "timeout"])
    assert decision.target is RouteTarget.HUMAN
    assert codes(decision) == ["generation_flags"]
    assert detail(decision, "generation_flags") == "last reply flagged: needs_human"


def test_strong_anger_escalates_and_uncertain_anger_does_not(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    (angry,) = play(analyzer, policy, ["This is ridiculous, you people are useless."])
    (nervous,) = play(analyzer, policy, ["I'm a little nervous about the installation"])

    assert "strong_emotion" in codes(angry)
    assert "anger at intensity" in detail(angry, "strong_emotion")
    assert nervous.target is RouteTarget.BOT


@pytest.mark.parametrize(
    "text",
    [
        "I'm so worried and scared, someone has hacked my account and stolen all my money!!",
        "I am devastated and heartbroken, my mum died and I can't cope",
    ],
)
def test_distress_escalates(analyzer: EmotionAnalyzer, policy: Policy, text: str) -> None:
    (decision,) = play(analyzer, policy, [text])

    assert "distress" in codes(decision)


def test_mild_worry_is_not_distress(analyzer: EmotionAnalyzer, policy: Policy) -> None:
    (decision,) = play(analyzer, policy, ["I'm worried I won't get it before the weekend"])

    assert decision.target is RouteTarget.BOT


def test_escalation_risk_uses_the_trajectory_score(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    turn = Conversation(analyzer).customer("Can I pay by card?")
    risky = EmotionTrajectory(
        turns=2,
        smoothed_sentiment=-0.6,
        trend=Trend.WORSENING,
        turns_since_negative=0,
        negative_streak=2,
        escalation_risk=0.85,
        risk_factors=["negative mood (-0.60)", "worsening"],
    )

    fired = decide(turn.model_copy(update={"trajectory": risky}), policy)
    below = risky.model_copy(update={"escalation_risk": 0.79})
    quiet = decide(turn.model_copy(update={"trajectory": below}), policy)

    assert codes(fired) == ["escalation_risk"]
    assert "0.85 \u2265 0.80" in detail(fired, "escalation_risk")
    assert "worsening" in detail(fired, "escalation_risk")
    assert quiet.target is RouteTarget.BOT


def _policy_file(tmp_path: Path, edit: dict[str, Any] | None = None, drop: str = "") -> Path:
    """The shipped policy with some rules' settings changed (or one rule removed)."""
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    for rule, changes in (edit or {}).items():
        data["rules"][rule].update(changes)
    if drop:
        del data["rules"][drop]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("rule", "text"),
    [("explicit_request", "let me talk to a person"), ("sensitive_topic", BEREAVED)],
)
def test_a_disabled_rule_does_not_fire(
    analyzer: EmotionAnalyzer, policy: Policy, tmp_path: Path, rule: str, text: str
) -> None:
    (enabled,) = play(analyzer, policy, [text])
    disabled_policy = load_policy(_policy_file(tmp_path, {rule: {"enabled": False}}))
    removed_policy = load_policy(_policy_file(tmp_path, drop=rule))

    (disabled,) = play(analyzer, disabled_policy, [text])
    (removed,) = play(analyzer, removed_policy, [text])

    assert rule in codes(enabled)
    assert rule not in codes(disabled)
    assert rule not in codes(removed)
    if rule == "explicit_request":
        assert disabled.target is RouteTarget.BOT


def _scenario_decisions(analyzer: EmotionAnalyzer, policy: Policy) -> Iterator[RoutingDecision]:
    yield from play(analyzer, policy, FRUSTRATED)
    yield from play(analyzer, policy, CALM, CALM_REPLIES)
    yield from play(analyzer, policy, [BEREAVED, "let me talk to a person"])
    yield from play(analyzer, policy, REPEATED, [STUCK_BOT, STUCK_BOT])
    yield from play(analyzer, policy, LONG_CALM)
    yield from play(
        analyzer,
        policy,
        ["My order arrived damaged.", "This is ridiculous, you people are useless."],
        customer_tier="gold",
        last_reply_flags=["needs_human", "llm_fallback"],
    )


def test_every_reason_has_evidence(analyzer: EmotionAnalyzer, policy: Policy) -> None:
    decisions = list(_scenario_decisions(analyzer, policy))
    fired = {reason.code for decision in decisions for reason in decision.reasons}

    for decision in decisions:
        assert decision.reasons
        assert decision.policy == "default-v1"
        for reason in decision.reasons:
            assert reason.detail.strip(), reason
    # The scenarios above exercise most of the rules, so this checks more than one detail.
    assert len(fired - {NO_RULE_MATCHED}) >= 8


def test_every_firing_rule_gives_one_reason_in_policy_order(
    analyzer: EmotionAnalyzer, policy: Policy
) -> None:
    text = (
        "Where is my parcel, it was due yesterday? I'm FURIOUS, get me a real person!! "
        "This is fraud and I will call my lawyer."
    )
    conversation = Conversation(analyzer)
    for _ in range(10):
        conversation.customer(text)
        conversation.bot(STUCK_BOT)
    turn = conversation.customer(text)
    # The analyzer reads this message as anxiety ("fraud"); the label is set here so that both
    # emotion rules can be checked on one message.
    emotion = turn.emotion.model_copy(
        update={
            "label": EmotionLabel.ANGER,
            "confidence": 0.9,
            "intensity": 0.9,
            "signals": [
                *turn.emotion.signals,
                Signal(name="human_request", evidence="x"),
                Signal(name="repeat_contact", evidence="x"),
            ],
        }
    )
    assert turn.trajectory is not None
    trajectory = turn.trajectory.model_copy(update={"escalation_risk": 1.0, "negative_streak": 5})
    everything = turn.model_copy(update={"emotion": emotion, "trajectory": trajectory})
    sad = everything.model_copy(
        update={
            "emotion": emotion.model_copy(update={"label": EmotionLabel.SADNESS, "confidence": 0.9})
        }
    )

    angry = decide(everything, policy, customer_tier="gold", last_reply_flags=["needs_human"])
    distressed = decide(sad, policy, customer_tier="gold", last_reply_flags=["needs_human"])

    assert codes(angry) == [code for code in ALL_RULES if code != "distress"]
    assert codes(distressed) == [code for code in ALL_RULES if code != "strong_emotion"]
    assert all(reason.detail for reason in angry.reasons + distressed.reasons)
    assert "'real person', 'x'" in detail(angry, "explicit_request")


def test_decisions_are_deterministic(analyzer: EmotionAnalyzer, policy: Policy) -> None:
    assert list(_scenario_decisions(analyzer, policy)) == list(
        _scenario_decisions(analyzer, policy)
    )


def test_similarity_normalises_case_and_punctuation() -> None:
    assert similarity("Where is my order??", "where is my ORDER") == 1.0
    assert similarity("It's broken", "its broken!") == 1.0
    assert similarity("a b c d", "a b c e") == pytest.approx(3 / 5)
    assert similarity("", "") == 1.0
    assert similarity("hello", "") == 0.0


# --- loading the policy ------------------------------------------------------------------------

MINIMAL = """\
version: 1
name: {name}
rules:
  explicit_request: {{enabled: true}}
"""


def test_the_shipped_policy_enables_every_rule(policy: Policy) -> None:
    assert policy.name == "default-v1"
    assert [name for name, _ in policy.rules.enabled()] == ALL_RULES


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("version: 1\nname: p\nrules:\n  strong_emoton: {enabled: true}\n", "strong_emoton"),
        (
            "version: 1\nname: p\nrules:\n  worsening: {enabled: true, min_negative_stretch: 3}\n",
            "min_negative_stretch",
        ),
        ("version: 1\nname: p\nrules: {}\nowner: platform\n", "owner"),
        (
            "version: 1\nname: p\nrules:\n  sensitive_topic: "
            "{signals: [vulnerabilty], keywords: [fraud]}\n",
            "vulnerabilty",
        ),
        ("version: 1\nname: p\nrules:\n  escalation_risk: {threshold: 1.5}\n", "threshold"),
        ("version: 1\nname: p\nrules:\n  strong_emotion: {labels: [rage]}\n", "rage"),
        ("version: 2\nname: p\nrules: {}\n", "version"),
        (
            "version: 1\nname: p\nrules:\n  bot_loop: {similarity: 0.8}\n  bot_loop: {}\n",
            "bot_loop",
        ),
        ("version: 1\nname: [p\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_an_invalid_policy_is_an_error_naming_the_problem(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert str(path) in str(caught.value)
    assert named in str(caught.value)


def test_a_missing_policy_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nowhere.yaml")


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _rewrite(path: Path, text: str) -> None:
    """Replace the file's content and move its mtime clearly forward."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    bumped = before + 5_000_000_000
    os.utime(path, ns=(bumped, bumped))


def test_policy_store_picks_up_an_edited_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL.format(name="first"), encoding="utf-8")
    store = PolicyStore(path, check_interval_s=0)
    reloads = _metric("cbd_escalation_policy_reloads_total")

    assert store.current().name == "first"
    assert store.current().name == "first"
    assert _metric("cbd_escalation_policy_reloads_total") == reloads

    _rewrite(path, MINIMAL.format(name="second"))

    assert store.current().name == "second"
    assert _metric("cbd_escalation_policy_reloads_total") == reloads + 1


def test_policy_store_keeps_the_old_policy_when_the_new_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL.format(name="good"), encoding="utf-8")
    store = PolicyStore(path, check_interval_s=0)
    errors = _metric("cbd_escalation_policy_reload_errors_total")

    _rewrite(path, MINIMAL.format(name="bad") + "  strong_emoton: {enabled: true}\n")

    assert store.current().name == "good"
    assert _metric("cbd_escalation_policy_reload_errors_total") == errors + 1
    # The same bad file is reported once, not at every check.
    assert store.current().name == "good"
    assert _metric("cbd_escalation_policy_reload_errors_total") == errors + 1

    _rewrite(path, MINIMAL.format(name="fixed"))

    assert store.current().name == "fixed"


def test_policy_store_keeps_the_policy_when_the_file_disappears(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL.format(name="good"), encoding="utf-8")
    store = PolicyStore(path, check_interval_s=0)
    errors = _metric("cbd_escalation_policy_reload_errors_total")

    path.unlink()

    assert store.current().name == "good"
    assert _metric("cbd_escalation_policy_reload_errors_total") == errors + 1


def test_policy_store_checks_the_file_at_most_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL.format(name="first"), encoding="utf-8")
    now = [100.0]
    store = PolicyStore(path, check_interval_s=2.0, clock=lambda: now[0])

    _rewrite(path, MINIMAL.format(name="second"))
    now[0] += 1.0
    assert store.current().name == "first"
    now[0] += 1.5
    assert store.current().name == "second"


def test_policy_store_refuses_to_start_with_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nname: p\nrules:\n  typo_rule: {}\n", encoding="utf-8")

    with pytest.raises(PolicyError, match="typo_rule"):
        PolicyStore(path)


def test_policy_store_defaults_to_the_shipped_policy() -> None:
    assert PolicyStore().current().name == "default-v1"
