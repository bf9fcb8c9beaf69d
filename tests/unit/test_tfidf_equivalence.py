"""The services' numpy inference equals scikit-learn's, on real texts, and never imports it.

Serving paths (`shared.tfidf`, `shared.logistic`) reimplement what scikit-learn computes at
inference so the services start without importing scikit-learn or SciPy. These tests hold
them to scikit-learn itself (imported here, and only here): the same TF-IDF rows, the same
fitted vocabulary and IDF, and probabilities within 1e-9 with identical labels, on the
project's own labelled texts, the GoEmotions test split it ships, and hostile input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from services.emotion import corpora, dataset
from services.emotion.lexicon import LexiconAnalyzer
from services.emotion.model import (
    LABELS,
    LearnedEmotionModel,
    char_vectorizer,
    lexical_features,
    word_vectorizer,
)
from services.generation.knowledge import ANALYZER, KnowledgeBase, english_stop_words, tokenize
from services.memory.issue_model import WEIGHTS, IssueModel, load_cases
from shared.embedding import MiniLmEmbedder
from shared.tfidf import SparseRows, TfidfTransform

ROOT = Path(__file__).resolve().parents[2]
KNOWLEDGE_DIR = ROOT / "services" / "generation" / "knowledge"
RELEVANCE_PAIRS = ROOT / "services" / "generation" / "data" / "relevance_pairs.jsonl"
TOLERANCE = 1e-9

HOSTILE = [
    "",
    "   ",
    "a",
    "I\u00a0can't\u2003log in\t\tagain!!!",
    "ÇA NE MARCHE PAS — où est ma commande?",
    "🙂🙂 thanks!!! 😡",
    "x" * 3000,
    "don't   won't\n\ncan't",
    "İstanbul ǅ ß ﬁ",  # lower() changes these lengths: counts must follow it
    "\u200d\ufe0f\u0000 control",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Our labelled texts, every GoEmotions test text shipped, and hostile strings."""
    own = [ex.text for split in ("train", "test") for ex in dataset.load(split)]
    own += [ex.text for ex in dataset.load_heldout()]
    public = [ex.text for ex in corpora.load_public("goemotions", "test")]
    return own + public[::3] + HOSTILE


@pytest.fixture(scope="module")
def model() -> LearnedEmotionModel:
    return LearnedEmotionModel.load()


def _reference(transform: TfidfTransform, vectorizer: TfidfVectorizer) -> TfidfVectorizer:
    """scikit-learn's vectorizer with the numpy transform's vocabulary and IDF."""
    vectorizer.idf_ = transform.idf
    return vectorizer


def _assert_same_rows(ours: SparseRows, theirs: sparse.csr_matrix) -> None:
    theirs = theirs.tocsr()
    theirs.sort_indices()
    assert ours.shape == theirs.shape
    assert np.array_equal(ours.indptr, theirs.indptr)
    assert np.array_equal(ours.indices, theirs.indices)
    assert np.allclose(ours.data, theirs.data, rtol=0, atol=1e-12)


def test_the_emotion_tfidf_rows_equal_scikit_learns(
    model: LearnedEmotionModel, texts: list[str]
) -> None:
    words = _reference(model.words, word_vectorizer(vocabulary=model.words.vocabulary))
    chars = _reference(model.chars, char_vectorizer(vocabulary=model.chars.vocabulary))
    _assert_same_rows(model.words.transform(texts), words.transform(texts))
    _assert_same_rows(model.chars.transform(texts), chars.transform(texts))


def test_the_emotion_probabilities_equal_scikit_learns(
    model: LearnedEmotionModel, texts: list[str]
) -> None:
    lexicon = LexiconAnalyzer()
    lexical = [lexicon.analyze(t) for t in texts]
    words = _reference(model.words, word_vectorizer(vocabulary=model.words.vocabulary))
    chars = _reference(model.chars, char_vectorizer(vocabulary=model.chars.vocabulary))
    dense = np.asarray([lexical_features(t, a) for t, a in zip(texts, lexical, strict=True)])
    x = sparse.hstack(
        [
            words.transform(texts),
            chars.transform(texts),
            sparse.csr_matrix(dense * model.lexical_weight),
        ],
        format="csr",
    )
    _assert_same_rows(model.features(texts, lexical), x)
    classes = np.arange(len(LABELS))
    assert model.gate is not None
    own = _classifier(model.coef, model.intercept, classes).predict_proba(x)
    public = _classifier(model.gate.coef, model.gate.intercept, classes).predict_proba(x)
    gate = _classifier(model.gate.weights[None, :], np.asarray([model.gate.bias]), [0, 1])
    share = gate.predict_proba(x)[:, 1:]
    routed = (1 - share) * own + share * public
    # The meaning expert's probabilities, from scikit-learn too, blended geometrically.
    assert model.meaning is not None
    meaning = _classifier(model.meaning.coef, model.meaning.intercept, classes).predict_proba(
        model.meaning.vectors.vectors(texts).astype(np.float64)
    )
    weight = model.meaning.weight
    blended = np.exp((1 - weight) * np.log(routed) + weight * np.log(meaning))
    expected = blended / blended.sum(axis=1, keepdims=True)
    ours = model.predict_proba(texts, lexical)
    assert np.abs(ours - expected).max() <= TOLERANCE
    assert np.array_equal(ours.argmax(axis=1), expected.argmax(axis=1))


def _classifier(coef: np.ndarray, intercept: np.ndarray, classes: Any) -> LogisticRegression:
    """A scikit-learn logistic regression holding given weights (as if fitted)."""
    reference = LogisticRegression()
    reference.coef_ = np.asarray(coef, dtype=np.float64)
    reference.intercept_ = np.asarray(intercept, dtype=np.float64)
    reference.classes_ = np.asarray(classes)
    reference.n_features_in_ = reference.coef_.shape[1]
    return reference


def _knowledge_documents() -> list[str]:
    base = KnowledgeBase.load(KNOWLEDGE_DIR, "demo")
    return [f"{e.title} {e.title} {e.text}" for e in base.entries]


def _queries(texts: list[str]) -> list[str]:
    """Customer messages: the relevance set's, our labelled texts, hostile input."""
    lines = RELEVANCE_PAIRS.read_text(encoding="utf-8").splitlines()
    messages = sorted({json.loads(line)["message"] for line in lines if line.strip()})
    return messages + texts[:400] + HOSTILE


def _knowledge_reference() -> TfidfVectorizer:
    """scikit-learn's vectorizer set up as generation's knowledge index was before numpy."""
    return TfidfVectorizer(
        tokenizer=tokenize,
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, 2),
        sublinear_tf=True,
    )


def test_the_knowledge_index_is_fitted_as_scikit_learn_fits_it(texts: list[str]) -> None:
    documents = _knowledge_documents()
    reference = _knowledge_reference()
    matrix = reference.fit_transform(documents)
    ours = TfidfTransform.fit(ANALYZER, documents, sublinear_tf=True)
    assert ours.vocabulary == reference.vocabulary_
    assert np.allclose(ours.idf, reference.idf_, rtol=0, atol=1e-12)
    _assert_same_rows(ours.transform(documents), matrix)
    queries = _queries(texts)
    _assert_same_rows(ours.transform(queries), reference.transform(queries))


def test_retrieval_scores_equal_scikit_learns(texts: list[str]) -> None:
    base = KnowledgeBase.load(KNOWLEDGE_DIR, "demo")
    documents = _knowledge_documents()
    reference = _knowledge_reference()
    matrix = reference.fit_transform(documents)
    hits = 0
    for query in _queries(texts):
        scores = (matrix @ reference.transform([query]).T).toarray().ravel()
        order = scores.argsort()[::-1][:3]
        expected = [(base.entries[i].id, scores[i]) for i in order if scores[i] >= 0.08]
        got = [(hit.entry.id, hit.score) for hit in base.retrieve(query)]
        assert [i for i, _ in got] == [i for i, _ in expected], query
        assert np.allclose([s for _, s in got], [s for _, s in expected], rtol=0, atol=1e-9)
        hits += bool(got)
    assert hits > 100  # the comparison covered real retrievals, not only empty answers


def test_the_stop_word_copy_is_scikit_learns() -> None:
    assert english_stop_words() == ENGLISH_STOP_WORDS


def test_issue_probabilities_equal_scikit_learns() -> None:
    """The shipped issue model's numpy arithmetic against scikit-learn holding its weights."""
    model, _ = IssueModel.load(WEIGHTS)
    detector = _classifier(model._coef[None, :], np.asarray([model._intercept]), [False, True])
    categories = _classifier(model._category_coef, model._category_intercept, model.categories)
    cases = MiniLmEmbedder().embed([c.text for c in load_cases()] + HOSTILE)
    wide = cases.astype(np.float64)  # scikit-learn computes float32 input in float32
    expected = detector.predict_proba(wide)[:, 1]
    ours = np.asarray([model.probability(row) for row in cases])
    assert np.abs(ours - expected).max() <= TOLERANCE
    assert np.array_equal(ours >= model.threshold, expected >= model.threshold)
    kinds = categories.predict_proba(wide)
    for row, probabilities in zip(cases, kinds, strict=True):
        name, p = model.category(row)
        assert name == model.categories[int(probabilities.argmax())]
        assert abs(p - probabilities.max()) <= TOLERANCE


SERVING = """
import sys
for name in ("ingest", "emotion", "memory", "escalation", "generation", "audit"):
    __import__(f"services.{name}.app")
from services.emotion.analyzer import EmotionAnalyzer
from services.generation.knowledge import KnowledgeBase
from services.memory.extraction import RuleExtractor
from shared.embedding import MiniLmEmbedder
from pathlib import Path
analysis = EmotionAnalyzer().analyze("I have been waiting an hour, this is ridiculous")
assert analysis.confidence > 0, analysis
base = KnowledgeBase.load(Path("services/generation/knowledge"), "demo")
assert base.retrieve("you charged me twice"), "no knowledge retrieved"
extractor = RuleExtractor(MiniLmEmbedder())
assert extractor.issue_model is not None
print(sorted(m for m in ("sklearn", "scipy") if m in sys.modules))
"""


def test_serving_never_imports_scikit_learn_or_scipy() -> None:
    """Every service app, the emotion model, retrieval and the issue model, fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", SERVING],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "fitted on other data" not in done.stderr  # the shipped issue weights loaded
    assert done.stdout.strip().splitlines()[-1] == "[]"
