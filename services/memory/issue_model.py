"""Is this message a problem to remember? An embedding classifier for what the rules miss.

The issue rules (`extraction._ISSUE_RULES`) are precise but only know the wordings they list:
on messages written after them (the `heldout` split of `data/issues.jsonl`) they found 29% of
the issues. This model reads the message's MiniLM embedding, which memory computes for every
turn anyway: a logistic regression for "is an issue" and a second one for the category, fitted
on the issues among the training messages.

The training messages are the train split of the project's own set (`data/issues.jsonl`), the
`issue_examples` of the terms file and the train split of public customer-service text
(`data/public_issues.jsonl`: Banking77 and CLINC150, see `public_issues`). Embedding twelve
thousand public messages takes minutes, too long for a service's start, so the fitted weights
ship in `data/issue_model.npz` with a fingerprint of what they were fitted on (`python -m
services.memory.issue_evaluation --fit` refits them). A service whose terms file has other
examples fits at start-up on its own set and examples instead, as before. C, the own set's
weight and the threshold were chosen by cross-validation on the own train split and by the
public dev split (`--tune`); see data/ISSUES_DATASHEET.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression

from shared.embedding import Embedder

log = logging.getLogger(__name__)

DATA = Path(__file__).parent / "data"
ISSUE_SET = DATA / "issues.jsonl"
PUBLIC_SET = DATA / "public_issues.jsonl"
WEIGHTS = DATA / "issue_model.npz"
TRAIN_SPLIT = "train"

REGULARISATION_C = 4.0
THRESHOLD = 0.6
OWN_WEIGHT = 10.0
"""Sample weight of an own-set message or terms example next to a public one's 1.0. C, the
threshold and this weight were chosen together (datasheet)."""


@dataclass(frozen=True)
class IssueCase:
    """One labelled message: its category, or None when it raises no issue."""

    case_id: str
    split: str
    text: str
    category: str | None
    source: str = "own"


def read_cases(path: Path, split: str | None = None, source: str | None = None) -> list[IssueCase]:
    """Labelled cases from a JSONL file, optionally one split and one source only."""
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            case = IssueCase(
                raw["id"], raw["split"], raw["text"], raw["category"], raw.get("source", "own")
            )
            if (split is None or case.split == split) and (source is None or case.source == source):
                cases.append(case)
    return cases


def load_cases(path: Path = ISSUE_SET, split: str | None = None) -> list[IssueCase]:
    """The project's own labelled cases, optionally one split only."""
    return read_cases(path, split)


def training_set(
    cases: Sequence[IssueCase], examples: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[str | None]]:
    """Texts and labels to fit on: the cases, then every terms-file example as an issue."""
    texts = [c.text for c in cases] + [t for texts in examples.values() for t in texts]
    labels = [c.category for c in cases] + [
        category for category, texts in examples.items() for _ in texts
    ]
    return texts, labels


@dataclass(frozen=True)
class TrainingData:
    """What the shipped model is fitted on: texts, labels (None: no issue) and sample weights."""

    texts: list[str]
    labels: list[str | None]
    weights: list[float]

    def fingerprint(self, model_id: str, c: float, threshold: float) -> str:
        """A digest of everything the fitted weights depend on."""
        payload = json.dumps([self.texts, self.labels, self.weights, model_id, c, threshold])
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def shipped_training_data(
    examples: Mapping[str, Sequence[str]],
    own: Path = ISSUE_SET,
    public: Path = PUBLIC_SET,
    own_weight: float = OWN_WEIGHT,
) -> TrainingData:
    """The own train split and the terms examples (weighted), then the public train split."""
    texts, labels = training_set(read_cases(own, TRAIN_SPLIT), examples)
    public_cases = read_cases(public, TRAIN_SPLIT)
    return TrainingData(
        texts + [c.text for c in public_cases],
        labels + [c.category for c in public_cases],
        [own_weight] * len(texts) + [1.0] * len(public_cases),
    )


def embed_in_batches(
    embedder: Embedder, texts: Sequence[str], batch: int = 16
) -> npt.NDArray[np.float32]:
    """Embeddings of many texts: one call pads every text to the longest, and thousands at once
    take gigabytes."""
    parts = [embedder.embed(list(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    return np.concatenate(parts) if parts else embedder.embed([])


def fit_shipped(
    embedder: Embedder, examples: Mapping[str, Sequence[str]], path: Path = WEIGHTS
) -> IssueModel:
    """Fit on the shipped training data and write the weights with their fingerprint."""
    data = shipped_training_data(examples)
    model = IssueModel.fit(
        embed_in_batches(embedder, data.texts),
        data.labels,
        c=REGULARISATION_C,
        threshold=THRESHOLD,
        weights=data.weights,
    )
    model.save(path, data.fingerprint(embedder.model_id, REGULARISATION_C, THRESHOLD))
    return model


def _softmax_rows(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    result: npt.NDArray[np.float64] = shifted / shifted.sum(axis=-1, keepdims=True)
    return result


class IssueModel:
    """A fitted issue classifier; `probability` and `category` read one message's embedding.

    It holds only the two logistic regressions' weights, so the same arithmetic serves a
    model fitted here and one loaded from `data/issue_model.npz`.
    """

    def __init__(
        self,
        coef: npt.NDArray[np.float64],
        intercept: float,
        category_coef: npt.NDArray[np.float64],
        category_intercept: npt.NDArray[np.float64],
        categories: Sequence[str],
        threshold: float = THRESHOLD,
    ) -> None:
        """A model from its weights (one row of category weights per category, or none)."""
        self.threshold = threshold
        self._coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        self._intercept = float(intercept)
        self._category_coef = np.asarray(category_coef, dtype=np.float64)
        self._category_intercept = np.asarray(category_intercept, dtype=np.float64).reshape(-1)
        self.categories = [str(c) for c in categories]

    @classmethod
    def fit(
        cls,
        vectors: npt.NDArray[np.float32],
        labels: Sequence[str | None],
        *,
        c: float = REGULARISATION_C,
        threshold: float = THRESHOLD,
        weights: Sequence[float] | None = None,
    ) -> IssueModel:
        """Fit on embedded texts; a label of None marks a message that is not an issue."""
        is_issue = np.array([label is not None for label in labels])
        if is_issue.all() or not is_issue.any():
            raise ValueError("the issue model needs both issues and non-issues to learn from")
        sample_weight = None if weights is None else np.asarray(weights, dtype=np.float64)
        # lbfgs with a fixed start: the same data always gives the same model.
        classifier = LogisticRegression(C=c, max_iter=3000).fit(
            vectors, is_issue, sample_weight=sample_weight
        )
        categories = [label for label in labels if label is not None]
        kinds = sorted(set(categories))
        if len(kinds) == 1:
            # One category alone needs no classifier (and LogisticRegression refuses one class).
            category_coef = np.zeros((1, vectors.shape[1]))
            category_intercept = np.zeros(1)
        else:
            # Every category weighs the same in total: the public sets' many payment problems
            # would otherwise pull a broken boiler towards "card_payment".
            issue_weight = (
                np.ones(len(categories)) if sample_weight is None else sample_weight[is_issue]
            )
            totals: dict[str, float] = {}
            for kind, weight in zip(categories, issue_weight, strict=True):
                totals[kind] = totals.get(kind, 0.0) + float(weight)
            balanced = issue_weight * np.array(
                [sum(totals.values()) / (len(totals) * totals[k]) for k in categories]
            )
            by_kind = LogisticRegression(C=c, max_iter=3000).fit(
                vectors[is_issue], categories, sample_weight=balanced
            )
            kinds = [str(k) for k in by_kind.classes_]
            category_coef, category_intercept = by_kind.coef_, by_kind.intercept_
            if len(kinds) == 2:
                # A binary regression keeps one row, for its second class; softmax needs both.
                category_coef = np.vstack([np.zeros_like(category_coef), category_coef])
                category_intercept = np.concatenate([[0.0], category_intercept])
        return cls(
            classifier.coef_[0],
            float(classifier.intercept_[0]),
            category_coef,
            category_intercept,
            kinds,
            threshold,
        )

    @classmethod
    def train(
        cls,
        embedder: Embedder,
        examples: Mapping[str, Sequence[str]],
        path: Path = ISSUE_SET,
        *,
        c: float = REGULARISATION_C,
        threshold: float = THRESHOLD,
    ) -> IssueModel:
        """Fit on the train split of the own labelled set plus the terms file's examples."""
        texts, labels = training_set(load_cases(path, TRAIN_SPLIT), examples)
        return cls.fit(embedder.embed(texts), labels, c=c, threshold=threshold)

    @classmethod
    def shipped(
        cls, embedder: Embedder, examples: Mapping[str, Sequence[str]], weights: Path = WEIGHTS
    ) -> IssueModel:
        """The shipped weights when they were fitted on exactly this training data; otherwise
        (other terms examples, another embedding model) a model fitted now on the own set."""
        expected = shipped_training_data(examples).fingerprint(
            embedder.model_id, REGULARISATION_C, THRESHOLD
        )
        if weights.exists():
            model, fingerprint = cls.load(weights)
            if fingerprint == expected:
                return model
        log.warning(
            "the shipped issue model was fitted on other data (terms examples or embedder); "
            "fitting on the own labelled set only: refit with "
            "`python -m services.memory.issue_evaluation --fit`"
        )
        return cls.train(embedder, examples)

    def save(self, path: Path, fingerprint: str) -> None:
        """Write the weights and the fingerprint of what they were fitted on."""
        with path.open("wb") as f:
            np.savez_compressed(
                f,
                coef=self._coef,
                intercept=np.array([self._intercept]),
                category_coef=self._category_coef,
                category_intercept=self._category_intercept,
                categories=np.array(self.categories),
                threshold=np.array([self.threshold]),
                fingerprint=np.array([fingerprint]),
            )

    @classmethod
    def load(cls, path: Path) -> tuple[IssueModel, str]:
        """A model saved by `save`, and the fingerprint it was saved with."""
        with np.load(path, allow_pickle=False) as saved:
            model = cls(
                saved["coef"],
                float(saved["intercept"][0]),
                saved["category_coef"],
                saved["category_intercept"],
                [str(c) for c in saved["categories"]],
                float(saved["threshold"][0]),
            )
            return model, str(saved["fingerprint"][0])

    def probability(self, vector: npt.NDArray[np.float32]) -> float:
        """How likely the message whose embedding this is reports a problem."""
        score = float(np.dot(self._coef, vector.reshape(-1))) + self._intercept
        return float(1.0 / (1.0 + np.exp(-score)))

    def category(self, vector: npt.NDArray[np.float32]) -> tuple[str, float]:
        """The most likely category of the issue, and its probability."""
        if len(self.categories) == 1:
            return self.categories[0], 1.0
        scores = self._category_coef @ vector.reshape(-1) + self._category_intercept
        probabilities = _softmax_rows(scores)
        best = int(np.argmax(probabilities))
        return self.categories[best], float(probabilities[best])
