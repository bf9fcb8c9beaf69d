"""The voice check: a reply talks *to* the customer, as a reply, in their language.

Cases come from the labelled set `services/generation/data/voice_replies.jsonl` (what the
local SmolLM2 model wrote when asked the care prompt, labelled by hand; see the datasheet) and
from hand-written shapes. The language half runs the real py3langid model; English customer
messages from Banking77 (public data, `shared/data/intents/`) check it never takes English for
another language.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.generation.care import CareKit
from services.generation.guardrails import Guardrails, split_sentences
from services.generation.handlers import build_prompting
from services.generation.prompt import PromptBuilder
from services.generation.settings import ReplyMode
from services.generation.voice import VoiceCheck
from shared.events import (
    CareVerdict,
    ConversationContext,
    CustomerProfile,
    EmotionLabel,
    ReplyFlag,
)
from shared.language import default_identifier, identifiable, language_of
from tests.unit.test_generation_care import answer, cfg, check_for, shown

ROOT = Path(__file__).resolve().parents[2]
LABELLED = ROOT / "services" / "generation" / "data" / "voice_replies.jsonl"
BANKING77 = ROOT / "shared" / "data" / "intents" / "banking77_test.jsonl"
VOICE_FLAGS = {ReplyFlag.NOT_ADDRESSED, ReplyFlag.META_TEXT, ReplyFlag.WRONG_LANGUAGE}
KNOWN_MISSES = {
    "s-35": "a Spanish label line ('Ejercicio:'): the frame patterns are English",
}
"""Labelled rows the check gets wrong today, and why. A row listed here must still be wrong
(so a fix is noticed and the row moves back to the exact check); any other row must be right."""


@pytest.fixture(scope="module")
def prompts() -> PromptBuilder:
    return build_prompting(cfg())[0]


@pytest.fixture(scope="module")
def kit(prompts: PromptBuilder) -> CareKit:
    return CareKit.build(cfg(), prompts.knowledge)


def rows() -> list[dict[str, Any]]:
    """The labelled replies."""
    return [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]


def flags_of(reply: str, check: VoiceCheck) -> set[ReplyFlag]:
    """Every voice flag any sentence of the reply raises."""
    return {f.flag for s in split_sentences(reply) for f in check.findings(s)}


def voice_for_row(row: dict[str, Any]) -> VoiceCheck:
    """The check as the service builds it for the row's customer."""
    return VoiceCheck.for_customer(row["message"], row.get("names", []), None, default_identifier())


# --- the labelled set ------------------------------------------------------------------------


def test_the_labelled_set_is_what_its_datasheet_says() -> None:
    data = rows()
    assert len({r["id"] for r in data}) == len(data)
    assert {r["source"] for r in data} <= {"smollm2-135m-instruct", "written"}
    assert sum(r["source"] == "smollm2-135m-instruct" for r in data) >= 40
    for row in data:
        assert set(row["flags"]) <= {f.value for f in VOICE_FLAGS}, row["id"]
    # Both kinds are there in numbers: replies that must pass and replies that must fail.
    assert sum(not r["flags"] for r in data) >= 20
    assert sum(bool(r["flags"]) for r in data) >= 20


@pytest.fixture(scope="module")
def rails() -> Guardrails:
    return build_prompting(cfg())[1]


@pytest.mark.parametrize("row", rows(), ids=lambda r: str(r["id"]))
def test_each_labelled_reply_gets_its_labels(row: dict[str, Any], rails: Guardrails) -> None:
    # Labels say what a reader sees; the prompt's own section headers ("Situation:", "the
    # customer seems to feel") are the guardrails' leak check's to catch, so a leak counts as
    # meta text here: together the two keep every labelled fault from the customer.
    found = {f.value for f in flags_of(row["reply"], voice_for_row(row))}
    if rails.leak(row["reply"]) is not None:
        found.add(ReplyFlag.META_TEXT.value)
    if row["id"] in KNOWN_MISSES:
        assert found != set(row["flags"]), f"{row['id']} is right now: drop it from KNOWN_MISSES"
    else:
        assert found == set(row["flags"]), row["reply"]


def test_the_check_gets_nearly_every_labelled_reply_right() -> None:
    data = rows()
    smollm = [r for r in data if r["source"] == "smollm2-135m-instruct"]
    assert len([r for r in smollm if r["id"] in KNOWN_MISSES]) <= len(smollm) // 20


# --- hand-written shapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence",
    [
        "The customer is asking about the delivery time.",
        "The user wants to know how to reset their password.",
        "The customer's parcel is late and they are upset.",
        "She seems frustrated about the refund.",
        "In this case, the client would like a refund.",
        "Sam wants to change his delivery address.",
    ],
)
def test_talking_about_the_customer_is_caught(sentence: str) -> None:
    check = VoiceCheck(names=("Sam",))
    assert ReplyFlag.NOT_ADDRESSED in {f.flag for f in check.findings(sentence)}


@pytest.mark.parametrize(
    "sentence",
    [
        "As an AI language model, I cannot check your order.",
        "I'm just an AI, but I can help.",
        "Here is a possible response: I'm sorry about your parcel.",
        "Here's a caring reply to the customer.",
        "Assistant: I'm sorry to hear that.",
        "Customer Service Agent: Thanks for waiting.",
        "Best regards, [Your Name]",
        "Dear [Customer Name], thanks for writing.",
        "Hi {name}, your order is on its way.",
        "<|im_start|>assistant I can help.",
        "This response acknowledges the customer's frustration.",
        "You are a caring customer service assistant.",
        "According to my instructions, I cannot share that.",
        "I was told to keep replies short.",
        "The knowledge section says delivery takes 3 to 5 days.",
    ],
)
def test_meta_text_is_caught(sentence: str) -> None:
    assert ReplyFlag.META_TEXT in {f.flag for f in VoiceCheck().findings(sentence)}


@pytest.mark.parametrize(
    "sentence",
    [
        "I'm sorry your parcel is late, Sam.",
        "Sam, your order is on its way.",
        "Our customer service team is open from 8am to 8pm.",
        "You can find the steps in the user guide.",
        "Your customer number is on your statement.",
        "They usually arrive within 3 to 5 working days.",
        "Here is what you can do next: freeze the card in the app.",
        "You are always welcome to ask again.",
        "I can help you reset your password.",
        "Please follow the instructions in the email we sent.",
        "Our support assistant can also help you in the app.",
        "Your card ending [card ending 1111] is safe.",
        "Follow these instructions to reset your password.",
        "Here's a suggestion: freeze the card in the app first.",
        "You are now chatting with an agent from our team.",
        "A colleague will call you back; she has all the details.",
    ],
)
def test_replies_to_the_customer_pass(sentence: str) -> None:
    check = VoiceCheck(names=("Sam",), language="en", identifier=default_identifier())
    assert check.findings(sentence) == []


def test_a_reply_in_another_language_than_the_customers_is_caught() -> None:
    ids = default_identifier()
    spanish = VoiceCheck.for_customer(
        "¿Dónde está mi pedido? Debía llegar el lunes y todavía no ha llegado.", identifier=ids
    )
    assert spanish.language == "es"
    [finding] = spanish.findings("I'm sorry your order has not arrived yet, let me help you.")
    assert finding.flag is ReplyFlag.WRONG_LANGUAGE
    assert spanish.findings("Siento mucho que tu pedido todavía no haya llegado.") == []
    # Too short to judge: neither side is a finding.
    assert spanish.findings("OK, thanks!") == []
    short = VoiceCheck.for_customer("hola", identifier=ids)
    assert short.language is None
    assert short.findings("I'm sorry your order has not arrived yet, let me help you.") == []
    # A language the channel gave wins over identifying the message.
    told = VoiceCheck.for_customer("ok", language="fr-FR", identifier=ids)
    assert told.language == "fr"


def test_english_customer_messages_are_never_taken_for_another_language() -> None:
    # Banking77's test split: 3,080 real English customer messages (CC BY 4.0).
    ids = default_identifier()
    texts = [json.loads(line)["text"] for line in BANKING77.read_text().splitlines()]
    judged = [t for t in texts if identifiable(t)]
    assert len(judged) > 1000
    wrong = [t for t in judged if language_of(t, ids) not in {"en", None}]
    # langid.py on short text: a handful at most, each then judged "unknown", never a reason
    # to fail an English reply (the check needs both sides identified).
    assert len(wrong) <= len(judged) // 200, wrong[:10]


# --- inside the care check and the stream ----------------------------------------------------


async def test_a_third_person_reply_never_streams(kit: CareKit) -> None:
    bus, llm = await answer(
        kit,
        "How long does standard delivery take?",
        "The customer is asking about the delivery time. Standard delivery takes 3 to 5 "
        "working days.",
        "Here is a response: Standard delivery takes 3 to 5 working days.",
    )
    [reply] = bus.replies()
    seen = " ".join(shown(bus)).lower()
    assert "the customer is asking" not in seen
    assert "here is a response" not in seen
    assert reply.payload.care_verdict is CareVerdict.COMPOSED
    assert {ReplyFlag.NOT_ADDRESSED, ReplyFlag.META_TEXT} <= {
        f.flag for f in reply.payload.care_findings
    }
    assert len(llm.prompts) == 2


async def test_the_regeneration_is_told_what_was_wrong(kit: CareKit) -> None:
    bus, llm = await answer(
        kit,
        "How long does standard delivery take?",
        "As an AI, I think standard delivery takes 3 to 5 working days.",
        "Standard delivery takes 3 to 5 working days.",
    )
    [reply] = bus.replies()
    assert reply.payload.care_verdict is CareVerdict.REGENERATED
    assert "as an ai" not in " ".join(shown(bus)).lower()
    retry = llm.prompts[1][-2].content
    assert 'speaking to the customer as "you"' in retry


def test_the_voice_check_runs_in_the_turn_check(kit: CareKit, prompts: PromptBuilder) -> None:
    check = check_for(
        kit,
        prompts,
        "Where is my parcel?",
        label=EmotionLabel.NEUTRAL,
        context=ConversationContext(profile=CustomerProfile(customer_id="c1", name="Sam Jones")),
    )
    assert check.voice.names == ("Sam",)
    report = check.whole("Sam is asking where the parcel is.", relevance=False)
    assert ReplyFlag.NOT_ADDRESSED in report.flags


async def test_llm_mode_records_the_voice_findings(kit: CareKit) -> None:
    bus, _ = await answer(
        kit,
        "How long does standard delivery take?",
        "The user is asking about delivery.",
        mode=ReplyMode.LLM,
    )
    [reply] = bus.replies()
    assert ReplyFlag.NOT_ADDRESSED in {f.flag for f in reply.payload.care_findings}
