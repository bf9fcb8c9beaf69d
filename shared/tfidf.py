"""TF-IDF at serving time in numpy alone, exactly as scikit-learn's `TfidfVectorizer` computes it.

Training fits with scikit-learn (it stays a dependency of `make emotion-model` and the
evaluation tools); the services only need the fitted transform: the same analyzers (token
pattern, word n-grams, `char_wb` n-grams), the vocabulary, the IDF weights, sublinear term
frequency and L2 row normalisation. Importing scikit-learn and SciPy was about half of the
emotion and generation services' start-up (see "Recovery time after a kill" in
docs/architecture.md), hence this module. `tests/unit/test_tfidf_equivalence.py` proves the
output equal to scikit-learn's on real texts.

The analyzers copy scikit-learn's (`sklearn.feature_extraction.text`, BSD-3-Clause) line for
line, because a different n-gram order or whitespace rule would silently change features.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from scipy import sparse

Analyzer = Callable[[str], list[str]]
Floats = npt.NDArray[np.float64]
Indices = npt.NDArray[np.int64]

_WHITE_SPACES = re.compile(r"\s\s+")
_BLOCK_ROWS = 256
"""Rows multiplied at a time: a product's temporary is (non-zeros x columns) floats."""


def word_ngrams(tokens: Sequence[str], ngram_range: tuple[int, int]) -> list[str]:
    """Tokens, then their n-grams joined by spaces, in scikit-learn's order."""
    min_n, max_n = ngram_range
    if max_n == 1:
        return list(tokens)
    original = list(tokens)
    if min_n == 1:
        grams = list(original)
        min_n += 1
    else:
        grams = []
    for n in range(min_n, min(max_n + 1, len(original) + 1)):
        for i in range(len(original) - n + 1):
            grams.append(" ".join(original[i : i + n]))
    return grams


def char_wb_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """Character n-grams inside words padded with one space each side (`char_wb`)."""
    text = _WHITE_SPACES.sub(" ", text)
    min_n, max_n = ngram_range
    grams: list[str] = []
    for word in text.split():
        w = " " + word + " "
        w_len = len(w)
        for n in range(min_n, max_n + 1):
            offset = 0
            grams.append(w[offset : offset + n])
            while offset + n < w_len:
                offset += 1
                grams.append(w[offset : offset + n])
            if offset == 0:  # a short word (w_len < n) counts once
                break
    return grams


def word_analyzer(
    token_pattern: str, ngram_range: tuple[int, int], *, lowercase: bool = True
) -> Analyzer:
    """`analyzer="word"` with a token pattern (no stop words, no accent stripping)."""
    pattern = re.compile(token_pattern)
    if pattern.groups > 1:
        raise ValueError("a token pattern may capture at most one group")

    def analyze(doc: str) -> list[str]:
        return word_ngrams(pattern.findall(doc.lower() if lowercase else doc), ngram_range)

    return analyze


def tokenizer_analyzer(
    tokenize: Callable[[str], list[str]], ngram_range: tuple[int, int], *, lowercase: bool = False
) -> Analyzer:
    """`analyzer="word"` with a custom tokenizer."""

    def analyze(doc: str) -> list[str]:
        return word_ngrams(tokenize(doc.lower() if lowercase else doc), ngram_range)

    return analyze


def char_wb_analyzer(ngram_range: tuple[int, int], *, lowercase: bool = True) -> Analyzer:
    """`analyzer="char_wb"`."""

    def analyze(doc: str) -> list[str]:
        return char_wb_ngrams(doc.lower() if lowercase else doc, ngram_range)

    return analyze


class SparseRows:
    """A compressed-sparse-row matrix with the few operations inference needs.

    `indptr[i]:indptr[i + 1]` are row i's slice of `indices` (columns, ascending) and `data`.
    """

    def __init__(self, data: Floats, indices: Indices, indptr: Indices, n_cols: int) -> None:
        """Wrap CSR arrays (not copied)."""
        self.data = data
        self.indices = indices
        self.indptr = indptr
        self.n_cols = n_cols

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Indices, Floats]], n_cols: int) -> SparseRows:
        """One matrix from (column indices, values) per row."""
        indices: list[Indices] = []
        data: list[Floats] = []
        lengths = [0]
        for cols, values in rows:
            indices.append(cols)
            data.append(values)
            lengths.append(len(cols))
        return cls(
            np.concatenate(data) if data else np.zeros(0),
            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
            np.cumsum(lengths, dtype=np.int64),
            n_cols,
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return len(self.indptr) - 1, self.n_cols

    def row(self, i: int) -> tuple[Indices, Floats]:
        """Row i's column indices and values."""
        start, end = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.indices[start:end], self.data[start:end]

    def __matmul__(self, dense: npt.NDArray[Any]) -> Floats:
        """This matrix times a dense vector (n_cols,) or matrix (n_cols, k)."""
        n_rows = self.shape[0]
        out = np.zeros((n_rows, *dense.shape[1:]), dtype=np.float64)
        for first in range(0, n_rows, _BLOCK_ROWS):
            last = min(first + _BLOCK_ROWS, n_rows)
            starts = self.indptr[first:last]
            start, end = int(self.indptr[first]), int(self.indptr[last])
            if start == end:
                continue
            values = self.data[start:end]
            picked = dense[self.indices[start:end]]
            products = values * picked if picked.ndim == 1 else values[:, None] * picked
            filled = np.flatnonzero(self.indptr[first + 1 : last + 1] > starts)
            # reduceat over the non-empty rows' starts: each sum runs to the next start, and
            # the empty rows in between add nothing.
            out[first + filled] = np.add.reduceat(products, starts[filled] - start, axis=0)
        return out

    def to_scipy(self) -> sparse.csr_matrix:
        """The same matrix for scikit-learn (training and evaluation only: imports SciPy)."""
        from scipy import sparse  # noqa: PLC0415 (never on the serving path)

        return sparse.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)


def hstack_rows(parts: Sequence[tuple[Indices, Floats, int]]) -> tuple[Indices, Floats]:
    """One row from per-block (indices, values, block width) pieces, columns offset in turn."""
    offset = 0
    indices: list[Indices] = []
    values: list[Floats] = []
    for cols, vals, width in parts:
        indices.append(cols + offset)
        values.append(vals)
        offset += width
    return np.concatenate(indices), np.concatenate(values)


class TfidfTransform:
    """A fitted `TfidfVectorizer`'s `transform`: counts, sublinear tf, IDF, L2 rows."""

    def __init__(
        self,
        analyzer: Analyzer,
        vocabulary: Mapping[str, int],
        idf: Floats,
        *,
        sublinear_tf: bool,
    ) -> None:
        """`vocabulary` maps each term to its column; `idf` holds one weight per column."""
        if len(vocabulary) != len(idf):
            raise ValueError(f"{len(vocabulary)} terms but {len(idf)} IDF weights")
        self.analyzer = analyzer
        self.vocabulary = dict(vocabulary)
        self.idf = np.asarray(idf, dtype=np.float64)
        self.sublinear_tf = sublinear_tf

    @classmethod
    def fit(cls, analyzer: Analyzer, docs: Sequence[str], *, sublinear_tf: bool) -> TfidfTransform:
        """Fit like `TfidfVectorizer` with its defaults (min_df=1, no cap, smooth IDF)."""
        counts = [cls._count(analyzer(doc), None) for doc in docs]
        terms = sorted({term for row in counts for term in row})
        vocabulary = {term: i for i, term in enumerate(terms)}
        df = np.zeros(len(terms), dtype=np.float64)
        for row in counts:
            for term in row:
                df[vocabulary[term]] += 1
        # Smoothed: as if one more document held every term once.
        idf = np.log((len(docs) + 1) / (df + 1)) + 1
        return cls(analyzer, vocabulary, idf, sublinear_tf=sublinear_tf)

    @property
    def terms(self) -> list[str]:
        """The vocabulary in column order (scikit-learn's `get_feature_names_out`)."""
        names = [""] * len(self.vocabulary)
        for term, i in self.vocabulary.items():
            names[i] = term
        return names

    def __len__(self) -> int:
        """The number of columns."""
        return len(self.vocabulary)

    @staticmethod
    def _count(grams: Iterable[str], vocabulary: Mapping[str, int] | None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for gram in grams:
            if vocabulary is None or gram in vocabulary:
                counts[gram] = counts.get(gram, 0) + 1
        return counts

    def transform_one(self, doc: str) -> tuple[Indices, Floats]:
        """One document's row: column indices (ascending) and weights."""
        counts = self._count(self.analyzer(doc), self.vocabulary)
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        pairs = sorted((self.vocabulary[term], n) for term, n in counts.items())
        cols = np.fromiter((c for c, _ in pairs), dtype=np.int64, count=len(pairs))
        tf = np.fromiter((n for _, n in pairs), dtype=np.float64, count=len(pairs))
        if self.sublinear_tf:
            tf = np.log(tf) + 1.0
        weights = tf * self.idf[cols]
        norm = math.sqrt(float(np.dot(weights, weights)))
        if norm != 0.0:
            weights = weights / norm
        return cols, weights

    def transform(self, docs: Sequence[str]) -> SparseRows:
        """The documents' rows."""
        return SparseRows.from_rows((self.transform_one(d) for d in docs), len(self))
