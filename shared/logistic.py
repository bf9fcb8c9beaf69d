"""Logistic regressions' link functions in numpy alone, as scikit-learn's `predict_proba`
applies them (softmax for a multinomial model, the logistic function for a binary one).

scikit-learn fits (at build time); services load the coefficients and predict with these, so
serving never imports scikit-learn or SciPy (see `shared.tfidf` for why).
`tests/unit/test_tfidf_equivalence.py` proves the probabilities equal scikit-learn's.
"""

from __future__ import annotations

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
