"""Issues of any kind (issue #18): the labelled set's test split holds the targets."""

from __future__ import annotations

import pytest

from services.memory.extraction import RuleExtractor
from services.memory.issue_evaluation import evaluate, report
from services.memory.issue_model import load_cases
from shared.embedding import MiniLmEmbedder


@pytest.fixture(scope="module")
def embedder() -> MiniLmEmbedder:
    return MiniLmEmbedder()


@pytest.fixture(scope="module")
def extractor(embedder: MiniLmEmbedder) -> RuleExtractor:
    return RuleExtractor(embedder)


@pytest.mark.parametrize(("split", "size"), [("test", 49), ("heldout", 40)])
def test_the_held_out_splits_meet_precision_and_recall(
    embedder: MiniLmEmbedder, split: str, size: int
) -> None:
    cases = load_cases(split=split)
    score = evaluate(cases, embedder)
    summary = report(score, split)

    assert len(cases) == size
    assert score.precision >= 0.9, summary
    assert score.recall >= 0.9, summary
    assert score.category_accuracy >= 0.75, summary


def test_the_splits_do_not_overlap() -> None:
    splits = {
        name: {c.text.lower() for c in load_cases(split=name)}
        for name in ("train", "test", "heldout")
    }
    assert all(splits.values())
    assert not splits["train"] & (splits["test"] | splits["heldout"])
    assert not splits["test"] & splits["heldout"]


@pytest.mark.parametrize(
    ("text", "category"),
    [
        (
            "My washing machine repair was supposed to happen today but no technician came",
            "repair",
        ),
        ("The engineer never turned up for the installation", "appointment"),
        ("Our internet has been down since Friday", "outage"),
        ("We've had no electricity all night", "outage"),
        ("The hotel cancelled our reservation without telling us", "booking"),
        ("You're still charging me after I cancelled my membership", "subscription"),
        ("They refused my warranty claim on the fridge", "warranty"),
        ("You sent me the wrong size", "wrong_item"),
    ],
)
def test_problems_beyond_deliveries_are_issues(
    embedder: MiniLmEmbedder, extractor: RuleExtractor, text: str, category: str
) -> None:
    found = extractor.extract(text, vector=embedder.embed([text])[0])

    assert [i.category for i in found.raised] == [category]


@pytest.mark.parametrize(
    "text",
    [
        "Hi, any news?",
        "How much does a boiler repair cost?",
        "Can I book an engineer for Tuesday?",
        "The internet is working again, thank you",
        "The technician was lovely",
    ],
)
def test_questions_chases_and_good_news_are_not_issues(
    embedder: MiniLmEmbedder, extractor: RuleExtractor, text: str
) -> None:
    found = extractor.extract(text, sentiment=0.0, vector=embedder.embed([text])[0])

    assert not found.raised
