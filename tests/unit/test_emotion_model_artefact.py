"""The shipped emotion model: hash-checked loading, a lossless save, and the training recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.emotion import dataset, meaning, training
from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.lexicon import LexiconAnalyzer
from services.emotion.model import (
    ARRAYS_FILE,
    LABELS,
    MANIFEST_FILE,
    MEANING_MODEL_NAME,
    MODEL_DIR,
    OWN_MODEL_NAME,
    ArtefactError,
    Gate,
    LearnedEmotionModel,
)
from services.emotion.transformer import load_model_from_settings
from shared.events import EmotionLabel


@pytest.fixture(scope="module")
def small() -> LearnedEmotionModel:
    """A model fitted on a slice of our examples: seconds, not minutes."""
    examples = dataset.load("train")[::4]
    lexicon = LexiconAnalyzer()
    return LearnedEmotionModel.train(
        [ex.text for ex in examples],
        [ex.label for ex in examples],
        [lexicon.analyze(ex.text) for ex in examples],
        max_word_features=2000,
        max_char_features=2000,
    )


def test_the_shipped_model_loads_and_names_itself() -> None:
    model = LearnedEmotionModel.load()
    manifest = json.loads((MODEL_DIR / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert model.name == manifest["name"] == MEANING_MODEL_NAME
    assert model.coef.shape[0] == len(LABELS)
    assert model.gate is not None
    assert model.gate.coef.shape == model.coef.shape


def test_the_settings_choose_the_shipped_or_the_own_data_model() -> None:
    assert load_model_from_settings("learned", None) is None  # the analyzer loads the default
    assert EmotionAnalyzer().model_name == MEANING_MODEL_NAME
    own = load_model_from_settings("own", None)
    assert isinstance(own, LearnedEmotionModel)
    assert own.name == OWN_MODEL_NAME


def test_an_altered_artefact_is_refused(tmp_path: Path) -> None:
    shutil.copytree(MODEL_DIR, tmp_path / "model")
    arrays = tmp_path / "model" / ARRAYS_FILE
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="SHA-256"):
        LearnedEmotionModel.load(tmp_path / "model")


def test_a_missing_artefact_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtefactError, match="unreadable"):
        LearnedEmotionModel.load(tmp_path)


def test_save_and_load_give_the_same_probabilities(
    small: LearnedEmotionModel, tmp_path: Path
) -> None:
    digest = small.save(tmp_path / "a", {"note": "test"})
    again = small.save(tmp_path / "b", {"note": "test"})
    assert digest == again  # fixed timestamps: the same weights give the same bytes
    loaded = LearnedEmotionModel.load(tmp_path / "a")
    texts = [ex.text for ex in dataset.load("test")[:20]]
    lexicon = LexiconAnalyzer()
    lexical = [lexicon.analyze(t) for t in texts]
    # Weights are stored as float32: probabilities agree to well under a rounding step.
    assert np.allclose(
        small.predict_proba(texts, lexical), loaded.predict_proba(texts, lexical), atol=1e-4
    )
    assert small.top_words(texts[0], EmotionLabel.NEUTRAL) == loaded.top_words(
        texts[0], EmotionLabel.NEUTRAL
    )


def test_the_gate_hands_each_text_to_one_expert_or_blends_them(
    small: LearnedEmotionModel,
) -> None:
    texts = ["where is my parcel", "thank you so much!"]
    lexicon = LexiconAnalyzer()
    lexical = [lexicon.analyze(t) for t in texts]
    own = small.predict_proba(texts, lexical)
    # A second expert that always says anxiety, and gates that never, always, or half trust it.
    anxious = np.full_like(small.coef, 0.0)
    anxiety = LABELS.index(EmotionLabel.ANXIETY)
    anxious_bias = np.zeros(len(LABELS))
    anxious_bias[anxiety] = 50.0
    zero = np.zeros(small.coef.shape[1])

    def routed(bias: float) -> LearnedEmotionModel:
        gate = Gate(anxious, anxious_bias, zero, bias)
        return LearnedEmotionModel(small.words, small.chars, small.coef, small.intercept, gate=gate)

    assert np.allclose(routed(-50.0).predict_proba(texts, lexical), own)
    assert (routed(50.0).predict_proba(texts, lexical).argmax(axis=1) == anxiety).all()
    half = routed(0.0).predict_proba(texts, lexical)
    assert np.allclose(half, 0.5 * own + 0.5 * np.eye(len(LABELS))[anxiety], atol=1e-6)
    assert np.allclose(half.sum(axis=1), 1.0)


def test_the_cross_validation_folds_are_stable_fifths() -> None:
    texts = [ex.text for ex in dataset.load("train")]
    folds = [training.own_fold(t) for t in texts]
    for k in range(training.FOLDS):
        assert 0.15 < folds.count(k) / len(texts) < 0.25
    assert folds == [training.own_fold(t) for t in texts]


# The first row of each table is the own expert alone, as `search` returns them.
CHOICES = {
    "never trades our domain for public data": (
        [
            {"gate_threshold": 1.0, "own_cv_f1": 0.87, "goemotions_dev_f1": 0.25},
            {"gate_threshold": 0.5, "own_cv_f1": 0.80, "goemotions_dev_f1": 0.60},
            {"gate_threshold": 0.8, "own_cv_f1": 0.865, "goemotions_dev_f1": 0.57},
            {"gate_threshold": 0.9, "own_cv_f1": 0.87, "goemotions_dev_f1": 0.52},
        ],
        0.8,
    ),
    # A setting that scores above the own expert by chance does not raise the floor.
    "the floor is the own expert, not the luckiest setting": (
        [
            {"gate_threshold": 1.0, "own_cv_f1": 0.82, "goemotions_dev_f1": 0.25},
            {"gate_threshold": 0.98, "own_cv_f1": 0.84, "goemotions_dev_f1": 0.55},
            {"gate_threshold": 0.9, "own_cv_f1": 0.812, "goemotions_dev_f1": 0.60},
            {"gate_threshold": 0.5, "own_cv_f1": 0.80, "goemotions_dev_f1": 0.61},
        ],
        0.9,
    ),
}


@pytest.mark.parametrize(("rows", "chosen"), CHOICES.values(), ids=CHOICES.keys())
def test_the_choice_keeps_our_domain_within_the_floor(
    rows: list[dict[str, float]], chosen: float
) -> None:
    assert training.choose(rows)["gate_threshold"] == chosen


def test_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score  # noqa: PLC0415 (the reference, only here)

    rng = np.random.default_rng(0)
    gold = [LABELS[i] for i in rng.integers(0, len(LABELS), 300)]
    predicted = rng.integers(0, len(LABELS), 300)
    ours = training._macro_f1_of(gold, predicted)
    reference = f1_score(
        [LABELS.index(g) for g in gold], predicted, average="macro", labels=range(len(LABELS))
    )
    assert ours == pytest.approx(reference)


def test_explanations_are_the_same_with_or_without_the_kept_features() -> None:
    model, fresh = LearnedEmotionModel.load(), LearnedEmotionModel.load()
    texts = [ex.text for ex in dataset.load("test")[:30]]
    lexicon = LexiconAnalyzer()
    probs = model.predict_proba(texts, [lexicon.analyze(t) for t in texts])
    labels = [LABELS[int(i)] for i in probs.argmax(axis=1)]
    assert model.top_words_batch(texts, labels, k=8) == fresh.top_words_batch(texts, labels, k=8)
    assert any(model.top_words_batch(texts, labels))


def test_the_shipped_artefact_was_built_with_the_settings_in_the_code() -> None:
    # Changing a setting in training.py without `make emotion-model` would ship stale weights.
    manifest = json.loads((MODEL_DIR / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["settings"] == {
        "own_c": training.OWN_C,
        "public_c": training.PUBLIC_C,
        "gate_c": training.GATE_C,
        "gate_sharpness": training.GATE_SHARPNESS,
        "gate_threshold": training.GATE_THRESHOLD,
        "max_word_features": training.MAX_WORD_FEATURES,
        "max_char_features": training.MAX_CHAR_FEATURES,
        "meaning_c": training.MEANING_C,
        "meaning_own_weight": training.MEANING_OWN_WEIGHT,
        "meaning_sif_a": meaning.SIF_A,
    }
    assert manifest["meaning_weight"] == training.MEANING_WEIGHT
    assert manifest["lexical_weight"] == training.LEXICAL_WEIGHT
    assert manifest["trained_on"]["own train.jsonl"] == len(dataset.load("train"))
