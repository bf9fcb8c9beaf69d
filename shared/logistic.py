"""A fitted logistic regression's predictions in numpy alone, as scikit-learn computes them.

scikit-learn fits (at build time); services load the coefficients and predict with this, so
serving never imports scikit-learn or SciPy (see `shared.tfidf` for why).
`tests/unit/test_tfidf_equivalence.py` proves the probabilities equal scikit-learn's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def softmax(logits: Floats) -> Floats:
    """Row-wise softmax, shifted by each row's maximum first (as scikit-learn does)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)


def sigmoid(x: Floats) -> Floats:
    """The logistic function, elementwise."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


class LogisticModel:
    """`LogisticRegression.predict_proba` from its `coef_`, `intercept_` and `classes_`."""

    def __init__(self, coef: Floats, intercept: Floats, classes: npt.NDArray[Any]) -> None:
        """Binary models have one coefficient row; multinomial ones one per class."""
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.classes = np.asarray(classes)
        rows = 1 if len(self.classes) == 2 else len(self.classes)
        if self.coef.ndim != 2 or self.coef.shape[0] != rows or self.intercept.shape != (rows,):
            raise ValueError(
                f"{len(self.classes)} classes need {rows} coefficient rows and intercepts, "
                f"got {self.coef.shape} and {self.intercept.shape}"
            )
        self._coef_t = np.ascontiguousarray(self.coef.T)

    @classmethod
    def from_sklearn(cls, estimator: Any) -> LogisticModel:
        """The parameters of a fitted `sklearn.linear_model.LogisticRegression`."""
        return cls(estimator.coef_, estimator.intercept_, estimator.classes_)

    def decision_function(self, x: npt.NDArray[Any]) -> Floats:
        """Scores: one per row for a binary model, one per class otherwise."""
        scores = np.asarray(x, dtype=np.float64) @ self._coef_t + self.intercept
        return np.asarray(scores.ravel() if scores.shape[1] == 1 else scores, dtype=np.float64)

    def predict_proba(self, x: npt.NDArray[Any]) -> Floats:
        """One row of class probabilities per input row, columns in `classes` order."""
        scores = self.decision_function(x)
        if len(self.classes) == 2:
            positive = sigmoid(scores)
            return np.stack([1 - positive, positive], axis=1)
        return softmax(scores)
