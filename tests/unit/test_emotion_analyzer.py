"""The learned emotion analyzer: quality on data it never saw, and robustness on bad input."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from services.emotion import corpora, dataset, evaluation
from services.emotion.analyzer import EmotionAnalyzer, own_data_model
from services.emotion.model import LABELS, OWN_MODEL_NAME, Matrix
from shared.events import NEGATIVE_SENTIMENT, SIGNAL_NAMES, EmotionAnalysis, EmotionLabel

BANKING77_TEST = Path(__file__).parents[2] / "shared" / "data" / "intents" / "banking77_test.jsonl"
HOW_TO_INTENTS = frozenset(
    {
        "exchange_rate",
        "age_limit",
        "supported_cards_and_currencies",
        "top_up_limits",
        "fiat_currency_support",
        "country_support",
        "atm_support",
        "visa_or_mastercard",
        "getting_virtual_card",
        "disposable_card_limits",
        "receiving_money",
        "edit_personal_details",
        "getting_spare_card",
        "automatic_top_up",
        "card_acceptance",
    }
)
"""Banking77 intents whose messages ask how something works, not why something went wrong
(each checked by reading its items): "Which ATMs accept this card?", "How old do I have to be?"."""


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


def report_for(analyzer: EmotionAnalyzer, examples: Sequence[dataset.Example]) -> evaluation.Report:
    results = analyzer.analyze_batch([ex.text for ex in examples])
    return evaluation.score(
        [ex.label for ex in examples], [(r.label, r.sentiment) for r in results]
    )


def test_test_split_quality(analyzer: EmotionAnalyzer) -> None:
    report = report_for(analyzer, dataset.load("test"))
    assert report.n >= 140
    assert report.macro_f1 >= 0.80, evaluation.format_report("test", report)
    assert report.sign_accuracy is not None
    assert report.sign_accuracy >= 0.90


def test_independently_written_heldout_quality(analyzer: EmotionAnalyzer) -> None:
    report = report_for(analyzer, dataset.load_heldout())
    # Issue #13: public data may not cost our own domain (own-data model 0.865, shipped 0.853).
    assert report.macro_f1 >= 0.85, evaluation.format_report("heldout", report)
    assert report.sign_accuracy is not None
    assert report.sign_accuracy >= 0.90


def test_real_reddit_comments_a_public_test_split(analyzer: EmotionAnalyzer) -> None:
    # Every tenth item of GoEmotions' test split (mapped to our labels): deterministic and fast.
    # The own-data model scored 0.232 on the whole split, its lexical half 0.339; the shipped
    # model 0.543 (see the datasheet).
    examples = corpora.load_public("goemotions", "test")[::10]
    report = report_for(analyzer, examples)
    assert report.n >= 450
    assert report.macro_f1 >= 0.50, evaluation.format_report("GoEmotions test", report)
    assert report.sign_accuracy is not None
    assert report.sign_accuracy >= 0.80


def test_real_review_sentences_have_the_sign_their_writers_gave(
    analyzer: EmotionAnalyzer,
) -> None:
    # UCI Sentiment Labelled Sentences (Amazon phones and sellers, Yelp restaurants), kept for
    # evaluation only: real customers' words about companies, written by none of us. The shipped
    # model: Amazon 0.861, Yelp 0.828 (negatives 0.818 / 0.720); VADER alone 0.699 / 0.654.
    items = corpora.load_sentiment("uci_sentences")
    for source in ("amazon", "yelp"):
        mine = [it for it in items if it.source == source]
        results = analyzer.analyze_batch([it.text for it in mine])
        report = evaluation.score_sign(
            [it.sentiment for it in mine], [(r.label, r.sentiment) for r in results]
        )
        assert report.n == 1000
        assert report.sign_accuracy >= 0.80, (source, report)
        assert min(report.positive_right, report.negative_right) >= 0.65, (source, report)


def test_real_customers_how_to_questions_do_not_lean_negative(analyzer: EmotionAnalyzer) -> None:
    # Issue #13: five of seven labels are negative, so an unsure reading used to land below
    # zero. On these 600 real bank customers' questions the earlier formula put the median at
    # -0.093 and 73% below -0.05; the shipped one -0.003 and 17%.
    rows = [json.loads(line) for line in BANKING77_TEST.read_text(encoding="utf-8").splitlines()]
    texts = [r["text"] for r in rows if r["source_label"] in HOW_TO_INTENTS]
    sentiments = [r.sentiment for r in analyzer.analyze_batch(texts)]
    assert len(texts) == 600
    assert abs(statistics.median(sentiments)) <= 0.05
    assert sum(s < -0.05 for s in sentiments) / len(texts) <= 0.3
    # A question is not a negative turn for the trajectory or the care check (5% shipped).
    assert sum(s <= NEGATIVE_SENTIMENT for s in sentiments) / len(texts) <= 0.1


def test_the_earlier_own_data_model_is_still_available() -> None:
    model = own_data_model()
    assert model.name == OWN_MODEL_NAME
    assert model.gate is None
    report = report_for(EmotionAnalyzer(model=model), dataset.load_heldout())
    assert report.macro_f1 >= 0.85, evaluation.format_report("heldout", report)


def test_the_model_beats_every_lexicon_baseline(analyzer: EmotionAnalyzer) -> None:
    examples = dataset.load("test")
    texts = [ex.text for ex in examples]
    gold = [ex.label for ex in examples]
    ours = report_for(analyzer, examples).macro_f1
    for name, predictor in [
        ("lexicon", evaluation.lexicon_predictor(analyzer.lexicon)),
        ("vader", evaluation.vader_predictor()),
        ("nade", evaluation.nade_predictor()),
    ]:
        baseline = evaluation.score(gold, predictor(texts)).macro_f1
        assert ours > baseline + 0.2, f"{name}: {baseline:.3f} vs ours {ours:.3f}"


def test_splits_do_not_overlap() -> None:
    train = {ex.text.casefold() for ex in dataset.load("train")}
    test = {ex.text.casefold() for ex in dataset.load("test")}
    heldout = {ex.text.casefold() for ex in dataset.load_heldout()}
    assert not train & test
    assert not train & heldout
    assert len(train) + len(test) >= 700
    assert set(dataset.label_counts(dataset.load("train")).values()) != {0}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("where is my parcel " * 6000, "too long"),
        ("\x00\x01\x02\x03" * 100 + "\ufffd" * 20, "not readable"),
        ("大家好我的包裹在哪里已经两个星期了", "not in English"),
        ("Bonjour, je voudrais savoir où est mon colis, merci beaucoup", "not in English"),
        ("Hola, quiero cancelar mi cuenta lo antes posible por favor", "not in English"),
    ],
)
def test_unreadable_input_is_neutral_with_no_confidence(
    analyzer: EmotionAnalyzer, text: str, reason: str
) -> None:
    result = analyzer.analyze(text)
    assert result.label is EmotionLabel.NEUTRAL
    assert result.confidence == 0.0
    assert result.scores[EmotionLabel.NEUTRAL] == 1.0
    assert reason in result.explanation
    assert result.degraded is False


def test_every_written_english_message_is_readable(analyzer: EmotionAnalyzer) -> None:
    examples = [*dataset.load("train"), *dataset.load("test"), *dataset.load_heldout()]
    unreadable = [ex.text for ex in examples if analyzer.unreadable(ex.text) is not None]
    assert unreadable == []


def test_scores_are_a_distribution_and_label_is_the_top(analyzer: EmotionAnalyzer) -> None:
    for text in ["I'm worried someone used my card", "thanks!!", "what's my balance"]:
        result = analyzer.analyze(text)
        assert abs(sum(result.scores.values()) - 1.0) < 1e-3
        assert result.label == max(result.scores, key=lambda lab: result.scores[lab])
        assert result.confidence == result.scores[result.label]
        assert -1.0 <= result.sentiment <= 1.0
        assert 0.0 <= result.intensity <= 1.0


def test_batch_and_single_agree(analyzer: EmotionAnalyzer) -> None:
    texts = ["My flight was cancelled twice.", "", "Great, thank you!", "Je suis fâché"]
    batch = analyzer.analyze_batch(texts)
    assert [b.label for b in batch] == [analyzer.analyze(t).label for t in texts]
    assert [b.scores for b in batch] == [analyzer.analyze(t).scores for t in texts]


def test_explanation_names_the_words_and_signals(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("THIS IS THE THIRD TIME I'm asking, let me talk to a real person!!")
    assert result.label in (EmotionLabel.FRUSTRATION, EmotionLabel.ANGER)
    assert "human_request" in {s.name for s in result.signals}
    assert "human_request" in result.explanation
    assert "words:" in result.explanation


def test_repetition_comes_from_the_conversation(analyzer: EmotionAnalyzer) -> None:
    earlier = ["Where is my refund for order 1234?"]
    result = analyzer.analyze("where is my refund for order 1234", earlier)
    assert "repetition" in {s.name for s in result.signals}


class BrokenModel:
    name = "broken"

    def predict_proba(self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]) -> Matrix:
        raise RuntimeError("model crashed")


class FixedModel:
    name = "fixed"

    def predict_proba(self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]) -> Matrix:
        row = np.zeros(len(LABELS))
        row[LABELS.index(EmotionLabel.ANXIETY)] = 0.8
        row[LABELS.index(EmotionLabel.NEUTRAL)] = 0.2
        return np.tile(row, (len(texts), 1))


def test_a_failing_model_degrades_to_neutral_instead_of_raising() -> None:
    results = EmotionAnalyzer(model=BrokenModel()).analyze_batch(["hello there", ""])
    assert [r.label for r in results] == [EmotionLabel.NEUTRAL, EmotionLabel.NEUTRAL]
    assert results[0].degraded is True
    assert results[0].model == "broken"


def test_any_model_can_stand_behind_the_analyzer() -> None:
    result = EmotionAnalyzer(model=FixedModel()).analyze("Will my card be blocked?")
    assert result.label is EmotionLabel.ANXIETY
    assert result.confidence == 0.8
    assert result.sentiment < 0
    assert result.model == "fixed"


class SpreadModel:
    """Leads with one label at 0.4 and spreads the rest evenly: an unsure model."""

    name = "spread"

    def __init__(self, lead: EmotionLabel) -> None:
        self.lead = lead

    def predict_proba(self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]) -> Matrix:
        row = np.full(len(LABELS), 0.1)
        row[LABELS.index(self.lead)] = 0.4
        return np.tile(row, (len(texts), 1))


@pytest.mark.parametrize(
    ("lead", "low", "high"),
    [
        # Issue #13: five of seven labels are negative, so the spread alone used to pull an
        # unsure neutral reading to -0.15 and an unsure joy reading to +0.04.
        (EmotionLabel.NEUTRAL, -0.1, 0.1),
        (EmotionLabel.CONFUSION, -0.1, 0.1),
        (EmotionLabel.JOY, 0.2, 1.0),
        (EmotionLabel.FRUSTRATION, -1.0, -0.2),
    ],
)
def test_an_unsure_spread_does_not_decide_the_sentiment(
    lead: EmotionLabel, low: float, high: float
) -> None:
    # A text with no sentiment words, so the lexical half adds nothing.
    result = EmotionAnalyzer(model=SpreadModel(lead)).analyze("Order 1234 and the form")
    assert result.label is lead
    assert low < result.sentiment < high


def test_readability_does_not_depend_on_the_model(analyzer: EmotionAnalyzer) -> None:
    other = EmotionAnalyzer(model=FixedModel())
    texts = [ex.text for ex in dataset.load("test")] + [
        "Worst company I've ever dealt with.",
        "Sort code for the Kendal branch?",
    ]
    assert [other.unreadable(t) for t in texts] == [analyzer.unreadable(t) for t in texts]


def test_every_signal_the_analyzer_emits_is_a_contract_name(analyzer: EmotionAnalyzer) -> None:
    texts = [
        "THIS IS A JOKE!!! Let me talk to a real person, I need it fixed TODAY or I'll cancel my "
        "account and call my lawyer. This damn company. My husband passed away last week.",
        "where is my refund for order 1234",
    ]
    emitted = {
        s.name
        for t in texts
        for s in analyzer.analyze(t, ["Where is my refund for order 1234?"]).signals
    }
    assert emitted <= set(SIGNAL_NAMES)
    assert len(emitted) >= 7


@pytest.mark.parametrize(
    "text",
    [
        "this is the worst service I have ever had",
        "do i have to call you again?",
        "what is this charge on my card",
    ],
)
def test_explanations_name_content_words_never_function_words_alone(
    analyzer: EmotionAnalyzer, text: str
) -> None:
    explanation = analyzer.analyze(text).explanation
    if "words:" not in explanation:
        return
    named = explanation.split("words: ")[1].split(";")[0]
    for phrase in (p.strip(" '") for p in named.split(",")):
        assert any(
            w not in {"this", "is", "do", "i", "what", "the", "on", "my"} for w in phrase.split()
        ), explanation


def test_function_word_phrases_are_dropped_from_explanations() -> None:
    from services.emotion.analyzer import _content_phrases  # noqa: PLC0415 (the rule itself)

    assert _content_phrases(
        ["this is", "do i", "worst", "is broken", "the", "the new", "me cry", "cry", "not happy"]
    ) == ["worst", "broken", "new", "cry", "not happy"]
