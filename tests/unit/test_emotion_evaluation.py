"""Unit tests for scoring emotion predictions and the lexicon-only baselines."""

from __future__ import annotations

import pytest

from services.emotion.evaluation import (
    LABELS,
    Prediction,
    Report,
    format_report,
    lexicon_predictor,
    score,
    score_sign,
    vader_predictor,
)
from shared.events import EmotionLabel

L = EmotionLabel

# Nine hand-made items; the comments say which counts each one feeds.
GOLD: list[EmotionLabel] = [
    L.JOY,  # 0 joy tp
    L.JOY,  # 1 joy fn, neutral fp
    L.ANGER,  # 2 anger tp
    L.ANGER,  # 3 anger fn, frustration fp
    L.FRUSTRATION,  # 4 frustration tp (but positive sentiment: wrong sign)
    L.NEUTRAL,  # 5 neutral tp
    L.CONFUSION,  # 6 confusion fn, joy fp
    L.SADNESS,  # 7 sadness tp
    L.NEUTRAL,  # 8 neutral fn, anxiety fp (anxiety is absent from gold)
]
PREDICTED: list[Prediction] = [
    (L.JOY, 0.8),
    (L.NEUTRAL, 0.1),
    (L.ANGER, -0.7),
    (L.FRUSTRATION, -0.5),
    (L.FRUSTRATION, 0.2),
    (L.NEUTRAL, 0.0),
    (L.JOY, 0.3),
    (L.SADNESS, -0.4),
    (L.ANXIETY, -0.3),
]


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


@pytest.fixture(scope="module")
def report() -> Report:
    return score(GOLD, PREDICTED)


def test_accuracy(report: Report) -> None:
    correct = 5  # items 0, 2, 4, 5, 7
    assert report.n == 9
    assert report.accuracy == pytest.approx(correct / 9)


def test_per_label_scores_from_counts(report: Report) -> None:
    # label: (tp, fp, fn)
    counts = {
        L.JOY: (1, 1, 1),
        L.ANGER: (1, 0, 1),
        L.FRUSTRATION: (1, 1, 0),
        L.NEUTRAL: (1, 1, 1),
        L.CONFUSION: (0, 0, 1),
        L.SADNESS: (1, 0, 0),
        L.ANXIETY: (0, 1, 0),
    }
    expected = {
        L.JOY: (1 / 2, 1 / 2, f1(1 / 2, 1 / 2), 2),
        L.ANGER: (1 / 1, 1 / 2, f1(1, 1 / 2), 2),
        L.FRUSTRATION: (1 / 2, 1 / 1, f1(1 / 2, 1), 1),
        L.NEUTRAL: (1 / 2, 1 / 2, f1(1 / 2, 1 / 2), 2),
        L.CONFUSION: (0.0, 0 / 1, 0.0, 1),
        L.SADNESS: (1 / 1, 1 / 1, f1(1, 1), 1),
        L.ANXIETY: (0 / 1, 0.0, 0.0, 0),
    }
    for label, (tp, fp, fn) in counts.items():
        precision, recall, f, support = expected[label]
        # The hand-written fractions agree with the counts ...
        assert precision == (tp / (tp + fp) if tp + fp else 0.0)
        assert recall == (tp / (tp + fn) if tp + fn else 0.0)
        assert support == tp + fn
        # ... and with the report.
        s = report.per_label[label]
        assert s.precision == pytest.approx(precision), label
        assert s.recall == pytest.approx(recall), label
        assert s.f1 == pytest.approx(f), label
        assert s.support == support, label
    assert set(report.per_label) == set(LABELS)


def test_macro_f1_averages_only_labels_present_in_gold(report: Report) -> None:
    # f1: joy 1/2, anger 2/3, frustration 2/3, neutral 1/2, confusion 0, sadness 1.
    present = [0.5, 2 * 1 * 0.5 / 1.5, 2 * 0.5 * 1 / 1.5, 0.5, 0.0, 1.0]
    expected = sum(present) / 6  # anxiety (support 0, only a false positive) left out

    assert report.macro_f1 == pytest.approx(expected)
    assert report.macro_f1 != pytest.approx(sum(present) / 7)


def test_confusion_counts(report: Report) -> None:
    c = report.confusion
    assert c[L.JOY][L.JOY] == 1
    assert c[L.JOY][L.NEUTRAL] == 1
    assert c[L.ANGER][L.ANGER] == 1
    assert c[L.ANGER][L.FRUSTRATION] == 1
    assert c[L.FRUSTRATION][L.FRUSTRATION] == 1
    assert c[L.NEUTRAL][L.NEUTRAL] == 1
    assert c[L.NEUTRAL][L.ANXIETY] == 1
    assert c[L.CONFUSION][L.JOY] == 1
    assert c[L.SADNESS][L.SADNESS] == 1
    assert sum(v for row in c.values() for v in row.values()) == 9
    assert sum(c[L.ANXIETY].values()) == 0
    assert set(c) == set(LABELS)
    assert all(set(row) == set(LABELS) for row in c.values())


def test_sign_accuracy_only_over_joy_and_negative_labels(report: Report) -> None:
    # Counted: 0 joy +0.8 ok, 1 joy +0.1 ok, 2 anger -0.7 ok, 3 anger -0.5 ok,
    # 4 frustration +0.2 wrong, 7 sadness -0.4 ok. Neutral (5, 8) and confusion (6) excluded.
    assert report.sign_n == 6
    assert report.sign_accuracy == pytest.approx(5 / 6)


def test_sign_accuracy_none_without_signed_items() -> None:
    r = score([L.NEUTRAL, L.CONFUSION], [(L.NEUTRAL, 0.5), (L.CONFUSION, -0.5)])

    assert r.sign_accuracy is None
    assert r.sign_n == 0
    assert r.accuracy == 1.0
    assert r.macro_f1 == 1.0


def test_zero_sentiment_is_the_wrong_sign() -> None:
    r = score([L.JOY, L.ANGER], [(L.JOY, 0.0), (L.ANGER, 0.0)])

    assert r.sign_accuracy == 0.0


def test_empty_input() -> None:
    r = score([], [])

    assert r.n == 0
    assert r.accuracy == 0.0
    assert r.macro_f1 == 0.0
    assert r.sign_accuracy is None


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="length"):
        score([L.JOY, L.ANGER], [(L.JOY, 0.5)])
    with pytest.raises(ValueError, match="length"):
        score([L.JOY], [])


def test_as_dict(report: Report) -> None:
    d = report.as_dict()

    assert d["n"] == 9
    assert d["macro_f1"] == round(report.macro_f1, 4)
    assert d["sign_accuracy"] == round(5 / 6, 4)
    assert d["per_label"]["anxiety"]["support"] == 0
    assert d["confusion"]["anger"]["frustration"] == 1


def test_format_report_has_macro_f1_and_every_label(report: Report) -> None:
    text = format_report("hand-made", report)

    assert text.startswith("hand-made:")
    assert f"macro-F1={report.macro_f1:.3f}" in text
    assert f"accuracy={report.accuracy:.3f}" in text
    assert f"{report.sign_accuracy:.3f}" in text
    for label in LABELS:
        assert label.value in text


def test_format_report_without_sign_accuracy() -> None:
    text = format_report("neutral only", score([L.NEUTRAL], [(L.NEUTRAL, 0.0)]))

    assert "sentiment sign=n/a" in text


def test_vader_predictor_maps_sign_to_joy_and_frustration() -> None:
    predict = vader_predictor()
    (pos, neg) = predict(
        [
            "I love this, thank you so much, it is wonderful!",
            "This is terrible and awful, I hate it.",
        ]
    )

    assert pos[0] is L.JOY
    assert pos[1] > 0
    assert neg[0] is L.FRUSTRATION
    assert neg[1] < 0
    assert predict([]) == []


def test_lexicon_predictor_returns_label_sentiment_pairs() -> None:
    texts = ["Thank you so much, that's brilliant!", "This is unacceptable, I'm furious!!"]
    predictions = lexicon_predictor()(texts)

    assert len(predictions) == len(texts)
    for label, sentiment in predictions:
        assert isinstance(label, EmotionLabel)
        assert isinstance(sentiment, float)
        assert -1.0 <= sentiment <= 1.0
    assert predictions[0][1] > 0 > predictions[1][1]


def test_sign_scores_positive_and_negative_items_and_counts_zero_as_wrong() -> None:
    polarity = ["positive", "positive", "negative", "negative", "negative", "neutral"]
    predicted: list[Prediction] = [
        (L.JOY, 0.6),  # right
        (L.NEUTRAL, 0.0),  # zero: wrong
        (L.ANGER, -0.8),  # right
        (L.JOY, 0.2),  # wrong
        (L.SADNESS, -0.1),  # right
        (L.NEUTRAL, 0.5),  # neutral: not scored
    ]

    report = score_sign(polarity, predicted)

    assert report.n == 5
    assert report.sign_accuracy == pytest.approx(3 / 5)
    assert report.positive_right == pytest.approx(1 / 2)
    assert report.negative_right == pytest.approx(2 / 3)
    assert report.as_dict()["sign_accuracy"] == 0.6


def test_sign_scoring_refuses_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        score_sign(["positive"], [])
