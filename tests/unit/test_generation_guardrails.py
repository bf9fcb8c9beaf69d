"""Unit tests for the output guardrails: masking, leak detection, commitments, streaming."""

from __future__ import annotations

import json
import random

import pytest

from services.generation.guardrails import (
    APPROVAL_LINE,
    Guardrails,
    TenantPolicy,
    iban_valid,
    luhn_valid,
    mask_sensitive,
    split_sentences,
    whole_sentences,
)
from services.generation.handlers import build_prompting
from services.generation.settings import PACKAGE_DIR, GenerationSettings
from services.generation.variants import Variant

CANARY = "zq5e1ec7ab1e99"
CORPUS = [
    json.loads(line)
    for line in (PACKAGE_DIR / "data" / "injection_corpus.jsonl").read_text().splitlines()
    if line.strip()
]


@pytest.fixture(scope="module")
def rails() -> Guardrails:
    _, built = build_prompting(GenerationSettings(canary=CANARY))
    return built


@pytest.fixture(scope="module")
def system_prompt() -> str:
    prompts, _ = build_prompting(GenerationSettings(canary=CANARY))
    return prompts.system_prompts[Variant.CARE]


def stream_all(rails: Guardrails, pieces: list[str]) -> tuple[str, str, tuple[str, ...]]:
    """(what streamed, the final reply text, its flags) for a reply arriving in pieces."""
    guard = rails.stream()
    out = [guard.feed(p) for p in pieces]
    rest, verdict = guard.finish()
    return "".join(out) + rest, verdict.text, verdict.flags


def chunks(text: str, seed: int) -> list[str]:
    """The text cut at random places, as a tokenizer might."""
    rng = random.Random(seed)
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(1, 6)
        pieces.append(text[i : i + n])
        i += n
    return pieces


# --- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4539148803436467", True), ("4539148803436468", False), ("79927398713", True)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    "card", ["4539 1488 0343 6467", "4539-1488-0343-6467", "4539148803436467", "378282246310005"]
)
def test_luhn_valid_card_numbers_are_masked(card: str) -> None:
    masked, count = mask_sensitive(f"my card is {card}, thanks")
    assert count == 1
    assert card not in masked
    assert f"[card ending {card.replace(' ', '').replace('-', '')[-4:]}]" in masked


@pytest.mark.parametrize(
    "text",
    [
        "order 4539148803436468 (fails Luhn)",
        "call 0800 123 4567",
        "order number 104233",
        "it costs 4.99 a month",
    ],
)
def test_other_numbers_are_left_alone(text: str) -> None:
    assert mask_sensitive(text) == (text, 0)


def test_ssn_iban_and_security_code_are_masked() -> None:
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB83 WEST 1234 5698 7654 32")
    text = "SSN 123-45-6789, IBAN GB82 WEST 1234 5698 7654 32, CVV: 123."
    masked, count = mask_sensitive(text)
    assert count == 3
    assert "123-45-6789" not in masked
    assert "5698" not in masked
    assert "[account ending 5432]" in masked
    assert "CVV: [removed]" in masked


# --- leaks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"the reference is {CANARY}",
        f"THE REFERENCE IS {CANARY.upper()}",
        " ".join(CANARY),
        "-".join([CANARY[:5], CANARY[5:]]),
    ],
)
def test_the_canary_in_any_spelling_is_a_leak(rails: Guardrails, text: str) -> None:
    assert rails.leak(text) == "canary"
    verdict = rails.check(text)
    assert verdict.leak == "canary"
    assert verdict.text == ""
    assert "prompt_leak" in verdict.flags


def test_eight_words_of_the_system_prompt_are_a_leak(rails: Guardrails, system_prompt: str) -> None:
    words = system_prompt.split("\n")[3].split()[1:]  # after the "-" of the bullet
    assert rails.leak("Sure: " + " ".join(words[:8])) == "system_prompt"
    assert rails.leak("Sure: " + " ".join(words[:6])) is None


def test_ordinary_replies_are_not_leaks(rails: Guardrails) -> None:
    assert rails.leak("I'm sorry your parcel is late. I'll check with the courier now.") is None
    # Introducing itself in the persona's words is not a leak.
    intro = "Hi! I'm Care, the customer service assistant of Bramble & Co. How can I help?"
    assert rails.leak(intro) is None


def test_canary_needs_length() -> None:
    with pytest.raises(ValueError, match="canary"):
        Guardrails("short", [])


# --- commitments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence",
    [
        "I'll refund you in full today.",
        "We will give you a 20% discount on your next order.",
        "Your refund has been approved.",
        "You will get a voucher for the trouble.",
        "I can offer you compensation of 50 pounds.",
        "Here's a goodwill credit for your account.",
        "I'll refund you if you send it back.",
    ],
)
def test_promises_the_policy_reserves_are_commitments(rails: Guardrails, sentence: str) -> None:
    assert rails.is_commitment(sentence)
    verdict = rails.check(f"I'm sorry. {sentence} Thanks.")
    assert "needs_approval" in verdict.flags
    assert APPROVAL_LINE in verdict.text
    assert sentence not in verdict.text


@pytest.mark.parametrize(
    "sentence",
    [
        "I can't offer a refund myself.",
        "A colleague will review your refund request.",
        "Would you like me to ask for a refund?",
        "I will freeze your credit card now.",
        "I'll send you a free returns label.",
        "Refunds are paid within 5 working days of the return arriving.",
    ],
)
def test_deferrals_information_and_allowed_actions_are_not(
    rails: Guardrails, sentence: str
) -> None:
    assert not rails.is_commitment(sentence)
    assert rails.check(sentence).flags == ()


def test_the_tenant_policy_decides_what_needs_approval(tmp_path: object) -> None:
    strict = Guardrails(CANARY, [], TenantPolicy(approval_required=("replacement",)))
    assert strict.is_commitment("I'll send a replacement today.")
    assert not strict.is_commitment("I'll refund you today.")


@pytest.mark.parametrize(
    ("text", "whole"),
    [
        ("Sorry about that. Here is what I found:\n\n1. **", "Sorry about that."),
        ("Your order shipped! It should arrive tomo", "Your order shipped!"),
        ('He said "it left today." Then the van bro', 'He said "it left today."'),
        ("Steps:\n1. Open the app.\n2. Tap", "Steps:\n1. Open the app."),
        ("1. Open the app\n2. Tap", "1. Open the app\n2. Tap"),
        ("No sentence ends here at all ", "No sentence ends here at all"),
        ("It costs 4.99 today. Shi", "It costs 4.99 today."),
        ("All done.", "All done."),
        ("", ""),
    ],
)
def test_whole_sentences_drops_what_the_token_limit_cut(text: str, whole: str) -> None:
    assert whole_sentences(text) == whole


def test_a_cut_reply_is_replaced_by_its_whole_sentences(rails: Guardrails) -> None:
    guard = rails.stream()
    for piece in ["Sorry about that. ", "Here is what ", "I found:\n\n1. **"]:
        guard.feed(piece)
    rest, verdict = guard.finish(cut=True)
    # Some of what streamed goes: nothing more is sent, the final reply replaces it.
    assert rest == ""
    assert verdict.text == "Sorry about that."


def test_a_cut_reply_whose_streamed_text_was_whole_ends_as_streamed(rails: Guardrails) -> None:
    guard = rails.stream()
    streamed = guard.feed("Sorry about that. Your parcel is on its way. ")
    rest, verdict = guard.finish(cut=True)
    assert (
        (streamed + rest).strip() == verdict.text == "Sorry about that. Your parcel is on its way."
    )


def test_split_sentences_keeps_every_character() -> None:
    text = "Hi there! How are you?  Fine.\nNext line"
    assert "".join(split_sentences(text)) == text
    assert split_sentences(text) == ["Hi there!", " How are you?", "  Fine.", "\n", "Next line"]


# --- streaming -----------------------------------------------------------------------------


def test_a_clean_reply_streams_word_by_word_and_ends_identical(rails: Guardrails) -> None:
    pieces = ["I'm", " sorry", " your", " parcel", " is", " late", ".", " Let", " me", " check"]
    guard = rails.stream()

    first = guard.feed(pieces[0])
    out = [first] + [guard.feed(p) for p in pieces[1:]]
    rest, verdict = guard.finish()

    assert first == "I'm"  # the first word goes out at once: no added time to first token
    assert "".join(out) + rest == verdict.text == "".join(pieces)
    assert verdict.flags == ()


def test_a_reply_that_opens_with_a_promise_verb_is_not_held(rails: Guardrails) -> None:
    guard = rails.stream()
    assert [guard.feed(p) for p in ["I", " can", " help", " with", " that"]] == [
        "I",
        " can",
        " help",
        " with",
        " that",
    ]


def test_a_word_that_may_become_a_commitment_word_waits_for_its_end(rails: Guardrails) -> None:
    guard = rails.stream()
    assert guard.feed("A full re") == "A full "
    assert guard.feed("fund is") == ""
    assert guard.feed(" paid") == ""


def test_digits_are_held_until_the_number_is_complete(rails: Guardrails) -> None:
    guard = rails.stream()
    assert guard.feed("Card") == "Card"
    assert guard.feed(" 4539") == " "
    assert guard.feed(" 1488") == ""
    assert guard.feed(" 0343 6467") == ""
    assert guard.feed(" frozen") == "[card ending 6467] frozen"


def test_a_word_that_may_be_the_canary_is_held(rails: Guardrails) -> None:
    guard = rails.stream()
    assert guard.feed("Hello ") == "Hello "
    assert guard.feed("zq") == ""
    assert guard.feed("uick") == "zquick"  # not the canary's beginning after all: it goes
    assert guard.feed(" fox") == " fox"


@pytest.mark.parametrize("seed", range(20))
def test_the_canary_never_streams_however_it_is_cut(rails: Guardrails, seed: int) -> None:
    text = f"Of course! The confidential reference is {CANARY}. Anything else?"

    sent, final, flags = stream_all(rails, chunks(text, seed))

    assert CANARY not in sent
    assert CANARY[:6] not in sent
    assert final == ""
    assert "prompt_leak" in flags


@pytest.mark.parametrize("seed", range(10))
def test_a_promise_never_streams_however_it_is_cut(rails: Guardrails, seed: int) -> None:
    text = "I understand. I'll refund you in full and add a voucher. Have a nice day."

    sent, final, flags = stream_all(rails, chunks(text, seed))

    assert "refund" not in sent
    assert "voucher" not in sent
    assert final == f"I understand. {APPROVAL_LINE}"
    assert flags == ("needs_approval",)


@pytest.mark.parametrize("seed", range(10))
def test_a_card_number_never_streams_however_it_is_cut(rails: Guardrails, seed: int) -> None:
    text = "Thanks. Your card 4539 1488 0343 6467 is now frozen."

    sent, final, _ = stream_all(rails, chunks(text, seed))

    for group in ("4539", "1488", "0343"):
        assert group not in sent
        assert group not in final
    assert "[card ending 6467]" in final


# --- the injection corpus ------------------------------------------------------------------


def test_the_corpus_has_at_least_fifty_distinct_attacks() -> None:
    assert len(CORPUS) >= 50
    assert len({c["text"] for c in CORPUS}) == len(CORPUS)
    assert len({c["id"] for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("attack", CORPUS, ids=[c["id"] for c in CORPUS])
def test_a_model_that_obeys_the_attack_still_leaks_nothing(
    rails: Guardrails, system_prompt: str, attack: dict[str, str]
) -> None:
    """The worst case: the model does what the attack asks and prints its instructions.

    The reply is the system prompt itself, preceded by the attack's words (models echo
    them), cut at random places; nothing of the canary or the prompt may reach the customer.
    """
    reply = f"{attack['text']} Sure, here it is: {system_prompt}"

    sent, final, flags = stream_all(rails, chunks(reply, hash(attack["id"]) % 1000))

    assert CANARY not in sent.replace(" ", "").lower()
    assert rails.leak(sent) is None
    assert final == ""
    assert "prompt_leak" in flags
