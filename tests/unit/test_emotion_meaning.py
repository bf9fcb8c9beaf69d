"""The meaning expert: static word-piece vectors, their blend, and their place in the artefact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.emotion import dataset
from services.emotion.lexicon import LexiconAnalyzer
from services.emotion.meaning import MeaningVectors, tokenizer
from services.emotion.model import LABELS, LearnedEmotionModel, Meaning, blend
from shared.logistic import softmax


@pytest.fixture(scope="module")
def shipped() -> LearnedEmotionModel:
    return LearnedEmotionModel.load()


@pytest.fixture(scope="module")
def vectors(shipped: LearnedEmotionModel) -> MeaningVectors:
    assert shipped.meaning is not None
    return shipped.meaning.vectors


def test_a_message_vector_is_unit_length_or_zero(vectors: MeaningVectors) -> None:
    out = vectors.vectors(["I am furious about this", "", "日本語"])
    assert out.shape == (3, vectors.dimensions)
    assert np.linalg.norm(out[0]) == pytest.approx(1.0, abs=1e-5)
    # No kept word piece (nothing, or a script the table leaves out): no evidence at all.
    assert not out[1].any()
    assert not out[2].any()


def test_words_of_a_feeling_lie_closer_than_opposite_feelings(vectors: MeaningVectors) -> None:
    """What MiniLM knows and n-grams cannot: unseen synonyms land near each other."""
    angry, livid, delighted, thrilled = vectors.vectors(
        ["I am absolutely furious", "I am absolutely livid", "I am delighted", "I am thrilled"]
    )
    assert float(angry @ livid) > float(angry @ delighted)
    assert float(delighted @ thrilled) > float(delighted @ livid)


def test_common_pieces_weigh_less_than_rare_ones(vectors: MeaningVectors) -> None:
    ids = tokenizer().encode("the furious", add_special_tokens=False).ids
    the, furious = (float(vectors.weight[i]) for i in ids)
    assert 0.0 < the < furious


def test_the_blend_is_the_model_at_zero_and_the_expert_at_one() -> None:
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(size=(4, len(LABELS))))
    logits = rng.normal(size=(4, len(LABELS)))
    assert np.allclose(blend(probs, logits, 0.0), probs)
    assert np.allclose(blend(probs, logits, 1.0), softmax(logits))
    half = blend(probs, logits, 0.5)
    assert np.allclose(half.sum(axis=1), 1.0)
    expected = softmax(0.5 * np.log(probs) + 0.5 * np.log(softmax(logits)))
    assert np.allclose(half, expected)


def test_the_shipped_model_blends_its_meaning_expert(shipped: LearnedEmotionModel) -> None:
    assert shipped.meaning is not None
    assert 0.0 < shipped.meaning.weight < 1.0
    texts = [ex.text for ex in dataset.load("test")[:10]]
    lexicon = LexiconAnalyzer()
    lexical = [lexicon.analyze(t) for t in texts]
    with_meaning = shipped.predict_proba(texts, lexical)
    meaning, shipped.meaning = shipped.meaning, None
    try:
        without = shipped.predict_proba(texts, lexical)
    finally:
        shipped.meaning = meaning
    assert np.allclose(with_meaning, blend(without, meaning.logits(texts), meaning.weight))
    assert not np.allclose(with_meaning, without)


def test_save_and_load_keep_the_meaning_expert(
    shipped: LearnedEmotionModel, vectors: MeaningVectors, tmp_path: Path
) -> None:
    examples = dataset.load("train")[::8]
    lexicon = LexiconAnalyzer()
    texts = [ex.text for ex in examples]
    small = LearnedEmotionModel.train(
        texts,
        [ex.label for ex in examples],
        [lexicon.analyze(t) for t in texts],
        max_word_features=500,
        max_char_features=500,
    )
    rng = np.random.default_rng(2)
    small.meaning = Meaning(
        vectors,
        coef=rng.normal(size=(len(LABELS), vectors.dimensions)),
        intercept=rng.normal(size=len(LABELS)),
        weight=0.3,
    )
    small.save(tmp_path, {"note": "test"})
    loaded = LearnedEmotionModel.load(tmp_path)
    assert loaded.meaning is not None
    assert loaded.meaning.weight == 0.3
    lexical = [lexicon.analyze(t) for t in texts[:10]]
    assert np.allclose(
        small.predict_proba(texts[:10], lexical),
        loaded.predict_proba(texts[:10], lexical),
        atol=1e-4,
    )
