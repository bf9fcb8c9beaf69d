"""What the rule extractor learns from customer messages, and what it must leave alone."""

from __future__ import annotations

import pytest

from services.memory.evaluation import load_cases, recall_at_k
from services.memory.extraction import GATED_THRESHOLD, RuleExtractor, parse_llm_memories
from shared.embedding import MiniLmEmbedder
from shared.events import MemoryKind

LEARNS = [
    ("I love eco-friendly stuff", "preference:eco_friendly", "Likes eco-friendly stuff"),
    ("I prefer eco-friendly products.", "preference:eco_friendly", "Prefers eco-friendly products"),
    ("Please call me Sam", "profile:preferred_name", "Likes to be called Sam"),
    ("I'm vegetarian", "fact:diet", "Is vegetarian"),
    (
        "Email me, don't call",
        "constraint:contact_channel",
        "Prefers to be contacted by email; do not phone",
    ),
    ("please don't call me", "constraint:contact_channel", "Does not want phone calls"),
    (
        "my daughter's birthday is on the 12th",
        "fact:birthday:daughter",
        "Daughter's birthday is on the 12th",
    ),
    (
        "My new address is 12 Oak Road, Leeds LS1 4AB.",
        "contact:address",
        "Address: 12 Oak Road, Leeds LS1 4AB",
    ),
    ("I've moved to Bristol", "contact:address", "Lives in Bristol"),
    (
        "I don't like plastic packaging",
        "preference:plastic_packaging",
        "Dislikes plastic packaging",
    ),
    ("can we speak in Spanish?", "profile:language", "Prefers Spanish"),
    ("I'm allergic to nuts", "fact:allergy:nuts", "Is allergic to nuts"),
    ("my email is sam@example.com", "contact:email", "Email: sam@example.com"),
    ("I'm a nurse and I work nights", "fact:work_pattern", "Works nights"),
    (
        "Don't send me marketing emails",
        "constraint:marketing",
        "Does not want marketing or promotional messages",
    ),
]


@pytest.mark.parametrize(("text", "slot", "memory"), LEARNS)
def test_learns_first_person_statements(text: str, slot: str, memory: str) -> None:
    learned = {m.slot: m.text for m in RuleExtractor().extract(text).memories}
    assert learned.get(slot) == memory, learned


@pytest.mark.parametrize(
    "text",
    [
        "call me back later",
        "I'd like to return this jacket",
        "do you like it?",
        "Do you sell eco-friendly products?",
        "What is your address?",
        "I love it when you keep me waiting",
    ],
)
def test_questions_and_idioms_teach_nothing(text: str) -> None:
    assert RuleExtractor().extract(text).memories == []


def test_profile_fields_come_with_the_memory() -> None:
    found = RuleExtractor().extract("Hi, my name is Alex Morgan. You can call me Al.")
    assert {(p.field, p.value) for p in found.profile} == {
        ("name", "Alex Morgan"),
        ("preferred_name", "Al"),
    }


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("My parcel never arrived and I'm furious", "delivery_lost"),
        ("I was charged twice for my order!", "billing"),
        ("I want a refund", "refund"),
        ("The blender arrived broken", "damaged_item"),
        ("I can't log in to my account", "account_access"),
        ("There are payments I didn't make, is this fraud?", "fraud"),
    ],
)
def test_issues_raised(text: str, category: str) -> None:
    assert [i.category for i in RuleExtractor().extract(text).raised] == [category]


def test_resolution_is_recognised_and_not_raised_again() -> None:
    found = RuleExtractor().extract("Good news: my parcel has finally arrived!")
    assert found.raised == []
    assert [r.category for r in found.resolved] == ["delivery_lost"]


def test_embedded_examples_catch_an_issue_the_rules_miss() -> None:
    extractor = RuleExtractor(MiniLmEmbedder())
    text = "The courier claims it was handed over but there is nothing on my doorstep"
    vector = extractor.embedder.embed([text])[0] if extractor.embedder else None
    assert RuleExtractor().extract(text, sentiment=-0.6).raised == []
    found = extractor.extract(text, sentiment=-0.6, vector=vector)
    assert [i.category for i in found.raised] == ["delivery_lost"]
    # A happy-sounding message ("please help" pleases VADER) counts only when the model is
    # sure; a plainly happy one is not an issue at all.
    happy = extractor.extract(text, sentiment=0.6, vector=vector)
    assert [i.confidence >= GATED_THRESHOLD for i in happy.raised] == [True]
    nice = "The technician was lovely and tidied up after himself"
    assert not extractor.extract(
        nice, sentiment=0.8, vector=MiniLmEmbedder().embed([nice])[0]
    ).raised


def test_llm_answers_are_validated() -> None:
    good = parse_llm_memories(
        'Sure! {"memories": [{"kind": "fact", "slot": "Pet Name", "text": "Has a cat called Tom"}]}'
    )
    assert [(m.kind, m.slot, m.extractor) for m in good] == [
        (MemoryKind.FACT, "fact:pet_name", "llm")
    ]
    assert parse_llm_memories("no JSON here") == []
    assert parse_llm_memories('{"memories": [{"kind": "secret", "slot": "x", "text": "y"}]}') == []
    assert parse_llm_memories('{"memories": "not a list"}') == []


def test_semantic_recall_meets_the_bar_on_the_held_out_split() -> None:
    """Top-3 recall on the labelled test split (the dev split chose the settings)."""
    score, misses = recall_at_k(load_cases(split="test"), MiniLmEmbedder(), k=3)
    assert score >= 0.90, f"recall@3 {score:.2f}, missed {misses}"
    assert len(load_cases(split="test")) == 100
