"""Is this message a problem to remember? An embedding classifier for what the rules miss.

The issue rules (`extraction._ISSUE_RULES`) are precise but only know the wordings they list:
on messages written after them (the `heldout` split of `data/issues.jsonl`) they found 29% of
the issues. This model reads the message's MiniLM embedding, which memory computes for every
turn anyway: a logistic regression for "is an issue", fitted at start-up on the train split of
`data/issues.jsonl` plus the `issue_examples` of the terms file, and a second one for the
category, fitted on the issues among them. C and the threshold were chosen by 5-fold
cross-validation on the train split only (`python -m services.memory.issue_evaluation
--tune`); see data/ISSUES_DATASHEET.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression

from shared.embedding import Embedder

ISSUE_SET = Path(__file__).parent / "data" / "issues.jsonl"
TRAIN_SPLIT = "train"

REGULARISATION_C = 16.0
THRESHOLD = 0.6
"""Chosen together by cross-validated F1 on the train split (datasheet)."""


@dataclass(frozen=True)
class IssueCase:
    """One labelled message: its category, or None when it raises no issue."""

    case_id: str
    split: str
    text: str
    category: str | None


def load_cases(path: Path = ISSUE_SET, split: str | None = None) -> list[IssueCase]:
    """The labelled cases, optionally one split only."""
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            cases.append(IssueCase(raw["id"], raw["split"], raw["text"], raw["category"]))
    return [c for c in cases if split is None or c.split == split]


def training_set(
    cases: Sequence[IssueCase], examples: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[str | None]]:
    """Texts and labels to fit on: the cases, then every terms-file example as an issue."""
    texts = [c.text for c in cases] + [t for texts in examples.values() for t in texts]
    labels = [c.category for c in cases] + [
        category for category, texts in examples.items() for _ in texts
    ]
    return texts, labels


class IssueModel:
    """A fitted issue classifier; `probability` and `category` read one message's embedding."""

    def __init__(
        self,
        vectors: npt.NDArray[np.float32],
        labels: Sequence[str | None],
        *,
        c: float = REGULARISATION_C,
        threshold: float = THRESHOLD,
    ) -> None:
        """Fit on embedded texts; a label of None marks a message that is not an issue."""
        is_issue = np.array([label is not None for label in labels])
        if is_issue.all() or not is_issue.any():
            raise ValueError("the issue model needs both issues and non-issues to learn from")
        self.threshold = threshold
        # lbfgs with a fixed start: the same data always gives the same model.
        self._classifier = LogisticRegression(C=c, max_iter=2000).fit(vectors, is_issue)
        categories = [label for label in labels if label is not None]
        # One category alone needs no classifier (and LogisticRegression refuses one class).
        self._only = categories[0] if len(set(categories)) == 1 else None
        self._categories = (
            None
            if self._only
            else LogisticRegression(C=c, max_iter=3000).fit(vectors[is_issue], categories)
        )

    @classmethod
    def train(
        cls,
        embedder: Embedder,
        examples: Mapping[str, Sequence[str]],
        path: Path = ISSUE_SET,
        **settings: float,
    ) -> IssueModel:
        """Fit on the train split of the labelled set plus the terms file's examples."""
        texts, labels = training_set(load_cases(path, TRAIN_SPLIT), examples)
        return cls(embedder.embed(texts), labels, **settings)

    def probability(self, vector: npt.NDArray[np.float32]) -> float:
        """How likely the message whose embedding this is reports a problem."""
        return float(self._classifier.predict_proba(vector.reshape(1, -1))[0, 1])

    def category(self, vector: npt.NDArray[np.float32]) -> tuple[str, float]:
        """The most likely category of the issue, and its probability."""
        if self._categories is None:
            assert self._only is not None
            return self._only, 1.0
        probabilities = self._categories.predict_proba(vector.reshape(1, -1))[0]
        best = int(np.argmax(probabilities))
        return str(self._categories.classes_[best]), float(probabilities[best])
