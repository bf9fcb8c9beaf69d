"""The care check, its streaming, regeneration and composed replies (fake LLM, real checks).

The relevance check uses the real MiniLM embedder; everything else is rules and lexicons.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from services.escalation.policy import PolicyError, load_policy
from services.generation.care import CareKit, Sources, TurnCheck, grounding_findings
from services.generation.compose import compose
from services.generation.guardrails import split_sentences
from services.generation.handlers import GenerationHandlers, build_prompting
from services.generation.prompt import PromptBuilder
from services.generation.relevance import confusion, load_pairs, scores
from services.generation.settings import GenerationSettings, ReplyMode
from services.generation.tone import CueToneAnalyzer, ToneCues
from shared.events import (
    CareVerdict,
    ConversationContext,
    CustomerProfile,
    EmotionLabel,
    HistoryTurn,
    ReplyFlag,
    Role,
    RouteTarget,
)
from shared.kafka import EventBus
from shared.llm import ChatClient, ChatMessage, StreamEnd
from tests.kit import RecordingBus
from tests.unit.test_generation_handlers import CANARY, routed_event
from tests.unit.test_generation_prompt import NOW, routed

ROOT = Path(__file__).resolve().parents[2]


class ScriptLLM:
    """Says each script in turn (the last one again if asked more), a word at a time."""

    model = "script"

    def __init__(self, *scripts: str, cut: bool = False) -> None:
        self.scripts = list(scripts)
        self.prompts: list[list[ChatMessage]] = []
        self.cut = cut
        """Every script ends as one the server stopped at the token limit."""

    async def stream(
        self, messages: Sequence[ChatMessage], *, end: StreamEnd | None = None, **_: Any
    ) -> AsyncIterator[str]:
        self.prompts.append(list(messages))
        text = self.scripts[min(len(self.prompts) - 1, len(self.scripts) - 1)]
        for word in re.findall(r"\S+\s*", text):
            yield word
        if end is not None:
            end.finish_reason = "length" if self.cut else "stop"


def cfg(**overrides: Any) -> GenerationSettings:
    values: dict[str, Any] = {"delta_flush_ms": 0, "canary": CANARY}
    return GenerationSettings(**(values | overrides))


@pytest.fixture(scope="module")
def kit() -> CareKit:
    prompts, _ = build_prompting(cfg())
    return CareKit.build(cfg(), prompts.knowledge)


@pytest.fixture(scope="module")
def prompts() -> PromptBuilder:
    return build_prompting(cfg())[0]


def check_for(kit: CareKit, prompts: PromptBuilder, text: str, **kwargs: Any) -> TurnCheck:
    turn = routed(text, **kwargs)
    return kit.for_turn(turn, prompts.build(turn))


async def answer(
    kit: CareKit,
    text: str,
    *scripts: str,
    mode: ReplyMode = ReplyMode.LLM_CHECKED,
    cut: bool = False,
    **kwargs: Any,
) -> tuple[RecordingBus, ScriptLLM]:
    bus = RecordingBus()
    llm = ScriptLLM(*scripts, cut=cut)
    handlers = GenerationHandlers(
        cast(EventBus, bus), cast(ChatClient, llm), cfg(reply_mode=mode), care=kit
    )
    event = routed_event(RouteTarget.BOT, text)
    payload = routed(text, **kwargs).model_copy(update={"message": event.payload.message})
    await handlers.on_turn_routed(event.model_copy(update={"payload": payload}))
    return bus, llm


def shown(bus: RecordingBus) -> list[str]:
    """Everything the customer would see: the streamed text and the final reply."""
    [reply] = bus.replies()
    return ["".join(d.payload.text for d in bus.deltas()), reply.payload.text]


# --- grounding -----------------------------------------------------------------------------

SOURCES = Sources.of(
    [
        "Report it lost or stolen by phone on 0800 123 4567 (24 hours).",
        "Bramble Plus costs 4.99 a month. Refunds are paid within 5 working days.",
        "Order 1042 arrived late last week",
    ]
)


@pytest.mark.parametrize(
    "sentence",
    [
        "Please call us on 0800 123 4567.",
        "Call 0800-123-4567 any time.",
        "Bramble Plus is £4.99 a month.",
        "Refunds take 5 working days.",
        "I can see order 1042 in your history was late.",
        "Nothing here has a number.",
    ],
)
def test_facts_from_the_sources_are_grounded(sentence: str) -> None:
    assert grounding_findings(sentence, SOURCES) == []


@pytest.mark.parametrize(
    ("sentence", "kind"),
    [
        ("Please call us at 1-800-555-0199 right away.", "phone number"),
        ("Reset it here: bit.ly/reset-bramble and follow the steps.", "link"),
        ("See https://bramble-help.com/reset for help.", "link"),
        ("Go to bramble.example/reset now.", "link"),
        ("Email us at help@bramble.example.com today.", "email"),
        ("Bramble Plus is only $2.99 this week.", "amount"),
        ("It will arrive on 12 December.", "date"),
        ("Your reference is ORD-55821.", "reference"),
        ("It takes 14 days.", "figure"),
        ("You will get a refund of twenty-five pounds.", "amount"),
    ],
)
def test_invented_facts_are_caught(sentence: str, kind: str) -> None:
    [finding] = grounding_findings(sentence, SOURCES)
    assert finding.flag is ReplyFlag.UNGROUNDED
    assert finding.detail.startswith(kind)


@pytest.mark.parametrize(
    "sentence",
    [
        "I've already checked your order and it is on its way.",
        "I have updated your address.",
        "I've raised a ticket with the courier.",
        "We refunded the charge this morning.",
        "Your refund has been processed.",
        "I can see your order is with the courier.",
        # Said other ways: going ahead, the passive, the team, doing it now, promising it.
        "I went ahead and refunded the charge.",
        "Your order was cancelled this morning.",
        "Your address is now updated.",
        "Our team refunded the charge this morning.",
        "I\u2019m processing your refund now.",
        "I'll refund the charge right away.",
        "We will reimburse the delivery fee.",
    ],
)
def test_claims_of_actions_need_an_action_result(sentence: str) -> None:
    [finding] = grounding_findings(sentence, SOURCES)
    assert finding.flag is ReplyFlag.UNBACKED_ACTION
    backed = Sources.of(
        [],
        actions=[
            "order lookup: checked, in transit",
            "address updated",
            "refund processed",
            "refunded 4.99",
            "order cancelled",
            "delivery fee reimbursed",
            "courier ticket raised",
        ],
    )
    assert [
        f
        for f in grounding_findings(sentence, backed)
        if f.check == "grounding" and f.flag is ReplyFlag.UNBACKED_ACTION and "see" not in sentence
    ] == []


@pytest.mark.parametrize(
    "sentence",
    [
        "I'll check your order for you.",
        "Once it has been processed, a colleague will email you.",
        "I've passed this request to a colleague who can approve it.",
        "Would you like me to check whether it was sent?",
        "I'll look into this with the courier.",
    ],
)
def test_offers_and_explanations_are_not_claims(sentence: str) -> None:
    assert grounding_findings(sentence, SOURCES) == []


def test_a_claim_the_knowledge_itself_makes_is_a_quotation() -> None:
    sentence = "The store is closed on Sundays."
    [finding] = grounding_findings(sentence, SOURCES)
    assert finding.flag is ReplyFlag.UNBACKED_ACTION
    knowledge = Sources.of(["Opening hours: the store is closed on Sundays."])
    assert grounding_findings(sentence, knowledge) == []


# --- tone and acknowledgement ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tone"),
    [
        ("You have no idea what you're talking about!", "hostile"),
        ("That's your fault for ordering so late.", "blaming"),
        ("Oh great, another password reset.", "sarcastic"),
        ("Calm down, it will arrive eventually.", "dismissive"),
        ("It's not that bad, honestly.", "dismissive"),
        ("As I already told you, read the instructions.", "blaming"),
    ],
)
def test_unkind_replies_are_read_as_unkind(text: str, tone: str) -> None:
    assert tone in CueToneAnalyzer().analyze(text).signals


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry about the wait, let's get this sorted.",
        "I understand how worrying this is. Freeze the card in the app first.",
        "Thanks for asking! Standard delivery takes 3 to 5 working days.",
        "Whatever you need, I'm here to help.",
    ],
)
def test_kind_replies_pass_the_tone_check(text: str) -> None:
    assert CueToneAnalyzer().analyze(text).signals == ()


def test_an_upset_customer_gets_an_acknowledgement_first(
    kit: CareKit, prompts: PromptBuilder
) -> None:
    check = check_for(kit, prompts, "My parcel is late again!", label=EmotionLabel.ANGER)
    flat = check.whole("Parcels arrive in 3 to 5 working days.", relevance=False)
    assert [f.flag for f in flat.findings] == [ReplyFlag.NO_ACKNOWLEDGEMENT]
    kind = check.whole(
        "Hi there. I'm sorry it's late again. Parcels arrive in 3 to 5 working days.",
        relevance=False,
    )
    assert kind.passed, kind.findings
    calm = check_for(kit, prompts, "How long is delivery?", label=EmotionLabel.NEUTRAL)
    assert calm.whole("Parcels arrive in 3 to 5 working days.", relevance=False).passed


# --- co-creation, repetition, leaks ---------------------------------------------------------


def test_an_unmet_request_must_not_be_promised_and_needs_the_alternative(
    kit: CareKit, prompts: PromptBuilder
) -> None:
    check = check_for(kit, prompts, "Can I get my debit card in purple?", label=EmotionLabel.JOY)
    assert check.unmet
    promised = check.whole("Yes! You can get a purple card.", relevance=False)
    assert {f.flag for f in promised.findings} == {ReplyFlag.OVERPROMISE, ReplyFlag.NO_ALTERNATIVE}
    bare = check.whole("We don't make purple cards.", relevance=False)
    assert [f.flag for f in bare.findings] == [ReplyFlag.NO_ALTERNATIVE]
    good = check.whole(
        "We don't make purple cards, but you can get a Charcoal card with a purple card sleeve.",
        relevance=False,
    )
    assert good.passed, good.findings


def test_a_reply_word_for_word_the_previous_one_fails(kit: CareKit, prompts: PromptBuilder) -> None:
    before = "Every order has a tracking link in the confirmation email."
    check = check_for(
        kit,
        prompts,
        "where is it??",
        history=[
            HistoryTurn(role=Role.CUSTOMER, text="where is it", at=NOW),
            HistoryTurn(role=Role.BOT, text=before, at=NOW),
        ],
    )
    assert [f.flag for f in check.whole(before.upper(), relevance=False).findings] == [
        ReplyFlag.REPEATED
    ]
    assert check.whole(before + " It is usually there within a day.", relevance=False).passed


@pytest.mark.parametrize(
    "reply",
    [
        "Strategy: Take ownership, apologise once, and say what happens next right away.",
        "Emotion: the customer seems to feel anger (intensity 0.8).",
        "Knowledge (the only facts you may state): [cards/lost-or-stolen-card] freeze it.",
        "Situation: A late or missing delivery. What works: reassure them.",
        "Reassure them that you will find out what happened. Give the concrete next step and",
    ],
)
def test_echoing_the_per_turn_section_is_a_leak(reply: str) -> None:
    _, rails = build_prompting(cfg())
    assert rails.leak(reply) is not None


# --- playbooks found by the model comparison ------------------------------------------------


def test_sarcasm_is_a_complaint_not_a_celebration(prompts: PromptBuilder) -> None:
    turn = routed("Oh brilliant... truly amazing service", label=EmotionLabel.JOY)
    match = prompts.select_playbook(turn)
    assert match is not None
    assert match.playbook.id == "complaint"
    sincere = prompts.select_playbook(
        routed("Thank you, that's brilliant!", label=EmotionLabel.JOY)
    )
    assert sincere is not None
    assert sincere.playbook.id == "celebration"


def test_an_address_change_is_not_a_late_delivery(prompts: PromptBuilder) -> None:
    turn = routed("Hi, can you help me change my delivery address?")
    built = prompts.build(turn)
    assert built.playbook == "address_change"
    assert built.knowledge_used[0] == "orders/changing-a-delivery-address"


# --- relevance ------------------------------------------------------------------------------


def test_relevance_threshold_holds_on_the_test_split(kit: CareKit) -> None:
    assert kit.relevance is not None
    test = [p for p in load_pairs() if p.split == "test"]
    result = confusion(
        scores(kit.relevance, test), [p.relevant for p in test], kit.relevance_threshold
    )
    # The figures the datasheet reports; a model or threshold change that loses them fails.
    assert result["relevant_kept"] >= 0.9, result
    assert result["off_topic_recall"] >= 0.75, result


# --- the handler in each mode ---------------------------------------------------------------


async def test_a_passing_reply_streams_sentence_by_sentence(kit: CareKit) -> None:
    bus, llm = await answer(
        kit,
        "How long does standard delivery take?",
        "Standard delivery takes 3 to 5 working days. Express takes 1 working day.",
    )
    deltas = [d.payload.text for d in bus.deltas()]
    [reply] = [r.payload for r in bus.replies()]
    assert reply.care_verdict is CareVerdict.PASSED, reply.care_findings
    assert deltas[0].strip() == "Standard delivery takes 3 to 5 working days."
    assert "".join(deltas).strip() == reply.text
    assert reply.relevance is not None
    assert reply.reply_mode == "llm_checked"
    assert len(llm.prompts) == 1


async def test_an_invented_number_never_streams_and_the_regeneration_is_sent(
    kit: CareKit,
) -> None:
    bus, llm = await answer(
        kit,
        "My card was stolen, who do I call?",
        "I'm sorry to hear that. Please call us at 1-800-555-0199 right away.",
        "I'm sorry to hear that. Freeze the card in the app, then call 0800 123 4567.",
        label=EmotionLabel.ANXIETY,
    )
    [reply] = [r.payload for r in bus.replies()]
    assert reply.care_verdict is CareVerdict.REGENERATED
    assert {ReplyFlag.CARE_FAILED, ReplyFlag.REGENERATED, ReplyFlag.UNGROUNDED} <= set(reply.flags)
    assert all("555" not in text for text in shown(bus))
    # The regeneration was told what was wrong.
    note = llm.prompts[1][-2]
    assert note.role == "system"
    assert "not in the knowledge section" in note.content


async def test_two_failures_end_in_a_composed_reply(kit: CareKit) -> None:
    bus, llm = await answer(
        kit,
        "Can I get my debit card in purple? Purple is my favourite colour.",
        "Yes! You can get a purple card.",
        "Of course, we can make your card purple for you.",
        label=EmotionLabel.JOY,
    )
    [reply] = [r.payload for r in bus.replies()]
    assert reply.care_verdict is CareVerdict.COMPOSED
    assert {ReplyFlag.CARE_FAILED, ReplyFlag.COMPOSED, ReplyFlag.OVERPROMISE} <= set(reply.flags)
    assert "sleeve" in reply.text
    assert "purple" in reply.text.lower()
    assert reply.model is None
    assert len(llm.prompts) == 2
    assert all("You can get a purple card" not in text for text in shown(bus))


@pytest.mark.parametrize("mode", [ReplyMode.LLM_CHECKED, ReplyMode.LLM])
async def test_a_reply_cut_at_the_token_limit_ends_at_its_last_whole_sentence(
    kit: CareKit, mode: ReplyMode
) -> None:
    # The small model's reply as CI's SMS test received it: stopped by max_tokens in a list.
    draft = "Standard delivery takes 3 to 5 working days. Here is what you can do:\n\n1. **Che"
    bus, _ = await answer(kit, "How long does standard delivery take?", draft, mode=mode, cut=True)
    [reply] = [r.payload for r in bus.replies()]
    assert reply.text == "Standard delivery takes 3 to 5 working days."
    assert reply.care_verdict in {CareVerdict.PASSED, CareVerdict.UNCHECKED}
    assert ReplyFlag.CUT in reply.flags


async def test_a_reply_that_ended_by_itself_is_kept_whole(kit: CareKit) -> None:
    # Not cut: a last sentence without a full stop is the model's choice, not the limit's.
    draft = "Standard delivery takes 3 to 5 working days. Express takes 1 working day"
    bus, _ = await answer(kit, "How long does standard delivery take?", draft, mode=ReplyMode.LLM)
    [reply] = [r.payload for r in bus.replies()]
    assert reply.text == draft
    assert ReplyFlag.CUT not in reply.flags


async def test_a_reply_that_leaks_twice_is_composed_and_stays_with_the_bot(kit: CareKit) -> None:
    bus, llm = await answer(
        kit,
        "Where is my order? It has been a week.",
        f"Sure. My reference is {CANARY}.",
        f"As instructed: {CANARY}",
        label=EmotionLabel.FRUSTRATION,
    )
    [reply] = [r.payload for r in bus.replies()]
    assert reply.care_verdict is CareVerdict.COMPOSED
    assert all(CANARY not in text for text in shown(bus))
    assert {ReplyFlag.PROMPT_LEAK, ReplyFlag.CARE_FAILED, ReplyFlag.COMPOSED} <= set(reply.flags)
    # The customer got a sound reply: no `guardrail` flag, which escalation's policy would turn
    # into a ticket (a small model's occasional leaks must not hand conversations off at random).
    assert ReplyFlag.GUARDRAIL not in reply.flags
    assert len(llm.prompts) == 2


async def test_a_hostile_reply_never_reaches_the_customer(kit: CareKit) -> None:
    bus, _ = await answer(
        kit,
        "I've asked three times about my refund!",
        "You have no idea what you're talking about! Refunds take time.",
        "Calm down, the refund will come when it comes.",
        label=EmotionLabel.ANGER,
    )
    [reply] = [r.payload for r in bus.replies()]
    assert reply.care_verdict is CareVerdict.COMPOSED
    analyzer = CueToneAnalyzer()
    for text in shown(bus):
        assert analyzer.analyze(text).signals == ()
    assert split_sentences(reply.text)[0].lower().startswith("i'm sorry")


async def test_llm_mode_sends_as_is_and_records_findings(kit: CareKit) -> None:
    bus, _ = await answer(
        kit,
        "Where is my order?",
        "I've already checked your order and it is on its way.",
        mode=ReplyMode.LLM,
    )
    [reply] = [r.payload for r in bus.replies()]
    assert reply.care_verdict is CareVerdict.UNCHECKED
    assert reply.text.startswith("I've already checked")
    assert ReplyFlag.UNBACKED_ACTION in reply.flags


async def test_composed_mode_never_calls_the_llm(kit: CareKit) -> None:
    profile = CustomerProfile(customer_id="c", preferred_name="Sam")
    bus, llm = await answer(
        kit,
        "My husband passed away and I don't know what to do with his account.",
        "unused",
        mode=ReplyMode.COMPOSED,
        label=EmotionLabel.SADNESS,
        context=ConversationContext(profile=profile),
    )
    [reply] = [r.payload for r in bus.replies()]
    assert llm.prompts == []
    assert reply.care_verdict is CareVerdict.COMPOSED
    assert reply.text.startswith("I'm so sorry for your loss, Sam.")
    assert "bereavement team" in reply.text
    assert [f for f in reply.care_findings if f.check != "relevance"] == []


async def test_a_question_the_knowledge_cannot_answer_is_composed_with_a_person(
    kit: CareKit,
) -> None:
    bus, _ = await answer(kit, "What's the weather like on Mars?", "", mode=ReplyMode.COMPOSED)
    [reply] = [r.payload for r in bus.replies()]
    assert ReplyFlag.NEEDS_HUMAN in reply.flags
    assert "colleague" in reply.text


@pytest.mark.parametrize(
    "scenario",
    json.loads(
        json.dumps(
            [
                ("You charged me TWICE for the same order!! Fix it now.", "anger"),
                ("My parcel still hasn't arrived and it's a present", "anxiety"),
                ("Oh brilliant... truly amazing service", "joy"),
                ("I bought this two months ago and want my money back", "frustration"),
                ("Can I get a pink card?", "joy"),
                ("I don't understand how to reset my password", "confusion"),
                ("There are payments on my card I didn't make", "anxiety"),
                ("Hi, can you help me change my delivery address?", "neutral"),
            ]
        )
    ),
)
async def test_composed_replies_pass_their_own_check(
    kit: CareKit, prompts: PromptBuilder, scenario: list[str]
) -> None:
    text, label = scenario
    turn = routed(text, label=EmotionLabel(label))
    built = prompts.build(turn)
    check = kit.for_turn(turn, built)
    made = compose(turn, built.hits, built.match, negative=check.customer_negative)
    report = check.whole(made.text, relevance=False)
    assert report.passed, (made.text, report.findings)


# --- the flag contract ----------------------------------------------------------------------


def test_escalation_policy_accepts_only_known_reply_flags(tmp_path: Path) -> None:
    source = (ROOT / "services" / "escalation" / "policy.yaml").read_text()
    assert load_policy(ROOT / "services" / "escalation" / "policy.yaml").rules.generation_flags
    bad = tmp_path / "policy.yaml"
    bad.write_text(source.replace("needs_approval]", "needs_aproval]"))
    with pytest.raises(PolicyError, match="needs_aproval"):
        load_policy(bad)


def test_the_tone_cue_file_loads_and_names_every_tone() -> None:
    cues = ToneCues.load()
    assert set(cues.unkind) == {"hostile", "blaming", "sarcastic", "dismissive"}
    assert cues.is_sarcastic("Oh brilliant... truly amazing service")
    assert cues.is_sarcastic("Great... just great.")
    assert not cues.is_sarcastic("Thank you, the service was amazing!")
