"""The tenant's knowledge base: policies, products and the alternatives that exist.

Each tenant has a folder under `CBD_GENERATION_KNOWLEDGE_DIR` of Markdown files; every `## `
section of a file is one entry (id `<file>/<section-slug>`). Retrieval is TF-IDF over word
unigrams and bigrams with a light suffix-stripping stemmer, scored by cosine similarity:
offline, deterministic, under a millisecond per query on a few hundred entries, and good at
the exact product and policy words customers use. The entries a turn carries are recorded on
the reply (`knowledge_used`) so a reviewer can see what an answer was grounded in.

The index is fitted at start-up from the tenant's files (a platform team edits them; an index
built elsewhere could go stale) by `shared.tfidf`, which computes exactly what scikit-learn's
`TfidfVectorizer` would, without importing scikit-learn and SciPy (half of the service's
start-up). `tests/unit/test_tfidf_equivalence.py` holds it to scikit-learn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.tfidf import SparseRows, TfidfTransform, tokenizer_analyzer

STOP_WORDS_FILE = Path(__file__).parent / "data" / "english_stop_words.txt"


def english_stop_words(path: Path = STOP_WORDS_FILE) -> frozenset[str]:
    """scikit-learn's English stop words, from the project's copy (`#` lines are comments)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(w.strip() for w in lines if w.strip() and not w.startswith("#"))


# Words the customer-service domain needs that the generic stop-word list drops.
_KEEP = frozenset({"card", "call", "first", "last", "full"})
_STOP = english_stop_words() - _KEEP
_WORD = re.compile(r"[a-z0-9]+")
_HEADING = re.compile(r"^##\s+(.+?)\s*$", re.MULTILINE)


def _stem(word: str) -> str:
    """Strip the commonest English endings, so 'refunds', 'refunded' and 'refund' meet (and
    'charge', 'charges', 'charged' and 'charging' all become 'charg')."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased, stop-word-free, stemmed words."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


ANALYZER = tokenizer_analyzer(tokenize, (1, 2))
"""Unigrams and bigrams of `tokenize`'s words (scikit-learn's `ngram_range=(1, 2)`)."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "section"


@dataclass(frozen=True)
class KnowledgeEntry:
    """One section of the knowledge base."""

    id: str
    title: str
    text: str


@dataclass(frozen=True)
class KnowledgeHit:
    """An entry retrieved for a query, with its cosine similarity."""

    entry: KnowledgeEntry
    score: float


def parse_markdown(name: str, markdown: str) -> list[KnowledgeEntry]:
    """The entries of one Markdown file: one per `## ` section (text before the first is
    the file's introduction, for people, and is not retrieved)."""
    entries = []
    heads = list(_HEADING.finditer(markdown))
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(markdown)
        body = " ".join(markdown[head.end() : end].split())
        if body:
            title = head.group(1)
            entries.append(KnowledgeEntry(f"{name}/{_slug(title)}", title, body))
    return entries


class KnowledgeBase:
    """A tenant's entries and the TF-IDF index over them."""

    def __init__(self, entries: list[KnowledgeEntry]) -> None:
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate knowledge entry ids: two sections share a title")
        self.entries = entries
        self._vectorizer: TfidfTransform | None = None
        self._matrix = SparseRows.from_rows([], 0)
        if entries:
            # The title counts twice: it names what the entry is about.
            documents = [f"{e.title} {e.title} {e.text}" for e in entries]
            self._vectorizer = TfidfTransform.fit(ANALYZER, documents, sublinear_tf=True)
            self._matrix = self._vectorizer.transform(documents)

    @classmethod
    def load(cls, knowledge_dir: Path, tenant: str) -> KnowledgeBase:
        """Every `*.md` file in the tenant's folder; a missing folder is an empty base."""
        folder = knowledge_dir / tenant
        entries: list[KnowledgeEntry] = []
        if folder.is_dir():
            for path in sorted(folder.glob("*.md")):
                if path.stem.isupper():
                    continue  # README.md, DATASHEET.md: for people, not for the prompt
                entries.extend(parse_markdown(path.stem, path.read_text(encoding="utf-8")))
        return cls(entries)

    def retrieve(self, query: str, k: int = 3, min_score: float = 0.08) -> list[KnowledgeHit]:
        """The `k` entries most similar to the query, best first, above `min_score`."""
        if self._vectorizer is None or k <= 0 or not query.strip():
            return []
        terms, weights = self._vectorizer.transform_one(query)
        query_vector = np.zeros(len(self._vectorizer))
        query_vector[terms] = weights
        # Rows are L2-normalised, so the dot product is the cosine similarity.
        scores = self._matrix @ query_vector
        order = scores.argsort()[::-1][:k]
        return [
            KnowledgeHit(self.entries[i], float(scores[i])) for i in order if scores[i] >= min_score
        ]
