"""Unit tests for the transformer emotion model, with a fake pipeline (no transformers needed)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.lexicon import LexiconAnalyzer
from services.emotion.model import LABELS
from services.emotion.transformer import (
    GOEMOTIONS_TO_CBD,
    TransformerEmotionModel,
    load_model_from_settings,
)
from shared.events import EmotionLabel

GOEMOTIONS = [
    "admiration",
    "amusement",
    "anger",
    "annoyance",
    "approval",
    "caring",
    "confusion",
    "curiosity",
    "desire",
    "disappointment",
    "disapproval",
    "disgust",
    "embarrassment",
    "excitement",
    "fear",
    "gratitude",
    "grief",
    "joy",
    "love",
    "nervousness",
    "optimism",
    "pride",
    "realization",
    "relief",
    "remorse",
    "sadness",
    "surprise",
    "neutral",
]

Scores = list[dict[str, Any]]


class FakePipeline:
    """Answers each text with the scores its first word names (default: all neutral)."""

    def __init__(self, by_keyword: Mapping[str, Scores]) -> None:
        self.by_keyword = by_keyword
        self.calls: list[dict[str, Any]] = []

    def __call__(self, texts: Sequence[str], **kwargs: Any) -> list[Scores]:
        self.calls.append({"texts": list(texts), **kwargs})
        default = [{"label": "neutral", "score": 1.0}]
        return [self.by_keyword.get(t.split()[0].lower(), default) for t in texts]


class FakeFactory:
    """Stands in for `transformers.pipeline`, recording how it was called."""

    def __init__(self, pipe: FakePipeline) -> None:
        self.pipe = pipe
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> FakePipeline:
        self.args, self.kwargs = args, kwargs
        return self.pipe


def goemotions(top: str, top_score: float = 0.9) -> Scores:
    """A GoEmotions-like output: `top` scores high, the rest share a small remainder."""
    rest = (1 - top_score) / (len(GOEMOTIONS) - 1)
    return [{"label": g, "score": top_score if g == top else rest} for g in GOEMOTIONS]


def build(tmp_path: Path, outputs: Mapping[str, Scores], **kwargs: Any) -> TransformerEmotionModel:
    model_dir = tmp_path / "go-emotions-roberta"
    model_dir.mkdir(exist_ok=True)
    return TransformerEmotionModel(
        model_dir, pipeline_factory=FakeFactory(FakePipeline(outputs)), **kwargs
    )


def column(label: EmotionLabel) -> int:
    return LABELS.index(label)


def test_rows_have_seven_columns_in_labels_order_summing_to_one(tmp_path: Path) -> None:
    model = build(tmp_path, {"thanks": goemotions("gratitude"), "ugh": goemotions("annoyance")})

    probs = model.predict_proba(["thanks so much", "ugh again", "hello"], [])

    assert probs.shape == (3, 7)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (probs >= 0).all()
    assert probs[2, column(EmotionLabel.NEUTRAL)] == pytest.approx(1.0)


def test_pipeline_is_loaded_locally_and_called_as_documented(tmp_path: Path) -> None:
    pipe = FakePipeline({})
    factory = FakeFactory(pipe)
    model_dir = tmp_path / "goemo"
    model_dir.mkdir()

    model = TransformerEmotionModel(model_dir, batch_size=8, device=-1, pipeline_factory=factory)
    model.predict_proba(["hello there"], [])

    assert model.name == "transformer:goemo"
    assert factory.args == ("text-classification",)
    assert factory.kwargs["model"] == str(model_dir)
    assert factory.kwargs["model_kwargs"] == {"local_files_only": True}
    assert factory.kwargs["device"] == -1
    assert pipe.calls == [
        {"texts": ["hello there"], "top_k": None, "truncation": True, "batch_size": 8}
    ]


def test_gratitude_maps_to_joy(tmp_path: Path) -> None:
    model = build(tmp_path, {"thanks": goemotions("gratitude")})

    probs = model.predict_proba(["thanks for sorting it"], [])

    assert LABELS[int(np.argmax(probs[0]))] is EmotionLabel.JOY


def test_annoyance_maps_to_frustration(tmp_path: Path) -> None:
    model = build(tmp_path, {"ugh": goemotions("annoyance")})

    probs = model.predict_proba(["ugh it broke again"], [])

    assert LABELS[int(np.argmax(probs[0]))] is EmotionLabel.FRUSTRATION


def test_unknown_source_labels_are_ignored(tmp_path: Path) -> None:
    outputs = {"mixed": [{"label": "LABEL_7", "score": 0.9}, {"label": "fear", "score": 0.1}]}
    model = build(tmp_path, outputs)

    probs = model.predict_proba(["mixed feelings"], [])

    assert probs[0, column(EmotionLabel.ANXIETY)] == pytest.approx(1.0)


def test_a_row_of_only_unknown_labels_is_neutral(tmp_path: Path) -> None:
    outputs = {"odd": [{"label": "LABEL_0", "score": 0.7}, {"label": "LABEL_1", "score": 0.3}]}
    model = build(tmp_path, outputs)

    probs = model.predict_proba(["odd output"], [])

    expected = np.zeros(7)
    expected[column(EmotionLabel.NEUTRAL)] = 1.0
    assert np.allclose(probs[0], expected)


def test_custom_label_map_and_split_weights(tmp_path: Path) -> None:
    label_map = {"POSITIVE": {EmotionLabel.JOY: 1.0}, "NEGATIVE": {EmotionLabel.FRUSTRATION: 1.0}}
    outputs = {"meh": [{"label": "POSITIVE", "score": 0.25}, {"label": "NEGATIVE", "score": 0.75}]}
    model = build(tmp_path, outputs, label_map=label_map)

    probs = model.predict_proba(["meh whatever"], [])

    assert probs[0, column(EmotionLabel.JOY)] == pytest.approx(0.25)
    assert probs[0, column(EmotionLabel.FRUSTRATION)] == pytest.approx(0.75)


def test_no_texts_give_an_empty_matrix_without_calling_the_pipeline(tmp_path: Path) -> None:
    pipe = FakePipeline({})
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    model = TransformerEmotionModel(model_dir, pipeline_factory=FakeFactory(pipe))

    assert model.predict_proba([], []).shape == (0, 7)
    assert pipe.calls == []


def test_analyzer_end_to_end_with_the_transformer(tmp_path: Path) -> None:
    outputs = {"thank": goemotions("gratitude"), "this": goemotions("anger", 0.95)}
    analyzer = EmotionAnalyzer(model=build(tmp_path, outputs), lexicon=LexiconAnalyzer())

    happy = analyzer.analyze("Thank you so much, that fixed my problem")
    angry = analyzer.analyze("This is unacceptable, I want my money back now")

    assert happy.label is EmotionLabel.JOY
    assert happy.sentiment > 0
    assert happy.model == "transformer:go-emotions-roberta"
    assert happy.degraded is False
    assert angry.label is EmotionLabel.ANGER
    assert angry.sentiment < 0
    assert sum(angry.scores.values()) == pytest.approx(1.0)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"

    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TransformerEmotionModel(missing, pipeline_factory=FakeFactory(FakePipeline({})))


def test_missing_transformers_package_is_a_runtime_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import transformers` fail, installed or not.
    monkeypatch.setitem(sys.modules, "transformers", None)

    with pytest.raises(RuntimeError, match="transformers"):
        TransformerEmotionModel(tmp_path)


def test_every_goemotions_label_is_mapped_with_weights_summing_to_one() -> None:
    assert set(GOEMOTIONS_TO_CBD) == set(GOEMOTIONS)
    assert len(GOEMOTIONS) == 28
    for source, weights in GOEMOTIONS_TO_CBD.items():
        assert sum(weights.values()) == pytest.approx(1.0), source
        assert all(isinstance(label, EmotionLabel) for label in weights), source


def test_settings_choose_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)

    assert load_model_from_settings("learned", None) is None
    with pytest.raises(ValueError, match="model_dir"):
        load_model_from_settings("transformer", None)
    with pytest.raises(RuntimeError, match="transformers"):
        load_model_from_settings("transformer", str(tmp_path))
    with pytest.raises(ValueError, match="unknown"):
        load_model_from_settings("bert", None)
