"""The services' numpy inference equals scikit-learn's, on real texts, and never imports it.

Serving paths (`shared.tfidf`, `shared.logistic`) reimplement what scikit-learn computes at
inference so the services start without importing scikit-learn or SciPy. These tests hold
them to scikit-learn itself (imported here, and only here): the same TF-IDF rows, the same
fitted vocabulary and IDF, and probabilities within 1e-9 with identical labels, on the
project's own labelled texts, the GoEmotions test split it ships, and hostile input.
"""

from __future__ import annotations

import json
import shutil
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
from services.memory.issue_model import ARRAYS_FILE as ISSUE_ARRAYS
from services.memory.issue_model import MANIFEST_FILE as ISSUE_MANIFEST
from services.memory.issue_model import MODEL_DIR as ISSUE_DIR
from services.memory.issue_model import (
    REGULARISATION_C,
    TRAIN_SPLIT,
    IssueModel,
    fingerprint,
    load_cases,
    training_set,
)
from services.memory.issue_model import ArtefactError as IssueArtefactError
from services.memory.terms import load_terms
from shared.embedding import MiniLmEmbedder
from shared.logistic import LogisticModel
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
    expected = (1 - share) * own + share * public
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


def test_the_knowledge_index_is_fitted_as_scikit_learn_fits_it(texts: list[str]) -> None:
    documents = _knowledge_documents()
    reference = TfidfVectorizer(
        tokenizer=tokenize,
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, 2),
        sublinear_tf=True,
    )
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
    reference = TfidfVectorizer(
        tokenizer=tokenize,
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, 2),
        sublinear_tf=True,
    )
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


@pytest.fixture(scope="module")
def issue_vectors() -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """The issue model's training embeddings and labels, and every labelled case's embedding."""
    embedder = MiniLmEmbedder()
    texts, labels = training_set(load_cases(split=TRAIN_SPLIT), load_terms().issue_examples)
    cases = [c.text for c in load_cases()] + HOSTILE
    # float64, as the issue model fits: scikit-learn computes float32 input in float32.
    return embedder.embed(texts).astype(np.float64), labels, embedder.embed(cases)


def test_issue_probabilities_equal_scikit_learns(
    issue_vectors: tuple[np.ndarray, list[str | None], np.ndarray],
) -> None:
    vectors, labels, cases = issue_vectors
    is_issue = np.array([label is not None for label in labels])
    detector = LogisticRegression(C=REGULARISATION_C, max_iter=2000).fit(vectors, is_issue)
    names = [label for label in labels if label is not None]
    categories = LogisticRegression(C=REGULARISATION_C, max_iter=3000).fit(vectors[is_issue], names)
    for reference in (detector, categories):
        ours = LogisticModel.from_sklearn(reference).predict_proba(cases)
        expected = reference.predict_proba(cases.astype(np.float64))
        assert np.abs(ours - expected).max() <= TOLERANCE
        assert np.array_equal(ours.argmax(axis=1), expected.argmax(axis=1))
    model = IssueModel.fit(vectors, labels)
    for row in cases:
        wide = row[None].astype(np.float64)
        assert abs(model.probability(row) - detector.predict_proba(wide)[0, 1]) <= TOLERANCE
        name, p = model.category(row)
        assert name == categories.predict(wide)[0]
        assert abs(p - categories.predict_proba(wide).max()) <= TOLERANCE


def test_the_shipped_issue_model_is_what_fitting_gives_now(
    issue_vectors: tuple[np.ndarray, list[str | None], np.ndarray],
) -> None:
    vectors, labels, cases = issue_vectors
    shipped = IssueModel.for_examples(MiniLmEmbedder(), load_terms().issue_examples)
    fitted = IssueModel.fit(vectors, labels)
    for row in cases:
        assert shipped.probability(row) == pytest.approx(fitted.probability(row), abs=1e-4)
        assert shipped.category(row)[0] == fitted.category(row)[0]


class _HashEmbedder:
    """A stand-in embedder (a vector per text from its hash): only the fallback's logic is
    under test here, and another embedder must never load the shipped coefficients."""

    model_id = "hash-stand-in"

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = [np.random.default_rng(list(t.encode()) or [0]).normal(size=8) for t in texts]
        return np.asarray(rows, dtype=np.float32)


def test_other_inputs_are_fitted_not_loaded(caplog: pytest.LogCaptureFixture) -> None:
    examples = {k: list(v) for k, v in load_terms().issue_examples.items()}
    IssueModel.for_examples(_HashEmbedder(), examples)
    assert "fitted at start-up" in caplog.text
    caplog.clear()
    examples["delivery_lost"] = [*examples.get("delivery_lost", []), "my box never came"]
    texts, labels = training_set(load_cases(split=TRAIN_SPLIT), examples)
    other = fingerprint(MiniLmEmbedder.model_id, REGULARISATION_C, texts, labels)
    with pytest.raises(IssueArtefactError, match="other issue examples"):
        IssueModel.load(ISSUE_DIR, other)


def test_an_altered_issue_artefact_is_refused(tmp_path: Path) -> None:
    for name in (ISSUE_ARRAYS, ISSUE_MANIFEST):
        shutil.copy(ISSUE_DIR / name, tmp_path / name)
    data = bytearray((tmp_path / ISSUE_ARRAYS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / ISSUE_ARRAYS).write_bytes(bytes(data))
    with pytest.raises(IssueArtefactError, match="SHA-256"):
        IssueModel.load(tmp_path)
    with pytest.raises(IssueArtefactError, match="unreadable"):
        IssueModel.load(tmp_path / "missing")


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
    assert "fitted at start-up" not in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
