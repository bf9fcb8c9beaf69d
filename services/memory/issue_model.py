"""Is this message a problem to remember? An embedding classifier for what the rules miss.

The issue rules (`extraction._ISSUE_RULES`) are precise but only know the wordings they list:
on messages written after them (the `heldout` split of `data/issues.jsonl`) they found 29% of
the issues. This model reads the message's MiniLM embedding, which memory computes for every
turn anyway: a logistic regression for "is an issue", fitted at start-up on the train split of
`data/issues.jsonl` plus the `issue_examples` of the terms file, and a second one for the
category, fitted on the issues among them. C and the threshold were chosen by 5-fold
cross-validation on the train split only (`python -m services.memory.issue_evaluation
--tune`); see data/ISSUES_DATASHEET.md.

Serving never fits: the fitted coefficients ship as a hash-checked artefact
(`data/issue-model.npz` and its manifest; `python -m services.memory.issue_model` rebuilds
it) and predict through `shared.logistic`, in numpy alone. Fitting at start-up embedded
every training text and imported scikit-learn and SciPy: most of memory's restart. The
manifest keeps a fingerprint of what the model was fitted on (embedder, C, every text and
label); a deployment whose terms file gives other issue examples fits its own model at
start-up instead, as before, and logs that it does.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.memory.terms import load_terms
from shared.embedding import Embedder, MiniLmEmbedder
from shared.logistic import LogisticModel

log = logging.getLogger(__name__)

ISSUE_SET = Path(__file__).parent / "data" / "issues.jsonl"
TRAIN_SPLIT = "train"
MODEL_DIR = Path(__file__).parent / "data"
ARRAYS_FILE = "issue-model.npz"
MANIFEST_FILE = "issue-model.json"

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


class ArtefactError(RuntimeError):
    """The shipped issue model is missing, altered or unreadable."""


def fingerprint(
    embedder_id: str, c: float, texts: Sequence[str], labels: Sequence[str | None]
) -> str:
    """What a fitted model depends on, hashed: a model fitted on other inputs never loads."""
    payload = json.dumps(
        {"embedder": embedder_id, "c": c, "texts": list(texts), "labels": list(labels)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class IssueModel:
    """A fitted issue classifier; `probability` and `category` read one message's embedding."""

    def __init__(
        self,
        detector: LogisticModel,
        categories: LogisticModel | str,
        *,
        threshold: float = THRESHOLD,
    ) -> None:
        """A detector (is an issue?) and a category model, or the one category there is."""
        self.threshold = threshold
        self._detector = detector
        self._categories = categories

    @classmethod
    def fit(
        cls,
        vectors: npt.NDArray[np.floating[Any]],
        labels: Sequence[str | None],
        *,
        c: float = REGULARISATION_C,
        threshold: float = THRESHOLD,
    ) -> IssueModel:
        """Fit on embedded texts; a label of None marks a message that is not an issue.

        Fitted by scikit-learn, imported here: the services load the shipped artefact."""
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        # In float64, like the numpy predictions: scikit-learn fits and predicts float32 input
        # in float32, which would round the served probabilities differently (1e-7).
        vectors = np.asarray(vectors, dtype=np.float64)
        is_issue = np.array([label is not None for label in labels])
        if is_issue.all() or not is_issue.any():
            raise ValueError("the issue model needs both issues and non-issues to learn from")
        # lbfgs with a fixed start: the same data always gives the same model.
        detector = LogisticRegression(C=c, max_iter=2000).fit(vectors, is_issue)
        names = [label for label in labels if label is not None]
        # One category alone needs no classifier (and LogisticRegression refuses one class).
        categories: LogisticModel | str = (
            names[0]
            if len(set(names)) == 1
            else LogisticModel.from_sklearn(
                LogisticRegression(C=c, max_iter=3000).fit(vectors[is_issue], names)
            )
        )
        return cls(LogisticModel.from_sklearn(detector), categories, threshold=threshold)

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
        return cls.fit(embedder.embed(texts), labels, **settings)

    @classmethod
    def for_examples(
        cls,
        embedder: Embedder,
        examples: Mapping[str, Sequence[str]],
        folder: Path = MODEL_DIR,
    ) -> IssueModel:
        """The shipped model when it was fitted on exactly these inputs, else a fresh fit."""
        texts, labels = training_set(load_cases(ISSUE_SET, TRAIN_SPLIT), examples)
        expected = fingerprint(embedder.model_id, REGULARISATION_C, texts, labels)
        try:
            return cls.load(folder, expected)
        except ArtefactError as exc:
            log.warning("issue model fitted at start-up (seconds): %s", exc)
        return cls.fit(embedder.embed(texts), labels)

    def probability(self, vector: npt.NDArray[np.float32]) -> float:
        """How likely the message whose embedding this is reports a problem."""
        return float(self._detector.predict_proba(vector.reshape(1, -1))[0, 1])

    def category(self, vector: npt.NDArray[np.float32]) -> tuple[str, float]:
        """The most likely category of the issue, and its probability."""
        if isinstance(self._categories, str):
            return self._categories, 1.0
        probabilities = self._categories.predict_proba(vector.reshape(1, -1))[0]
        best = int(np.argmax(probabilities))
        return str(self._categories.classes[best]), float(probabilities[best])

    def save(self, folder: Path, trained_on: str, about: Mapping[str, object]) -> str:
        """Write the coefficients and a manifest (their SHA-256, the inputs' fingerprint).

        Fixed timestamps in the archive: the same weights give the same bytes."""
        arrays = {
            "detector_coef": self._detector.coef,
            "detector_intercept": self._detector.intercept,
            "detector_classes": self._detector.classes.astype(bool),
        }
        if isinstance(self._categories, LogisticModel):
            arrays["category_coef"] = self._categories.coef
            arrays["category_intercept"] = self._categories.intercept
            arrays["category_classes"] = self._categories.classes.astype(str)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, array in arrays.items():
                member = io.BytesIO()
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, member.getvalue())
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ARRAYS_FILE).write_bytes(data)
        manifest = {
            "sha256": digest,
            "trained_on": trained_on,
            "only_category": self._categories if isinstance(self._categories, str) else None,
            **about,
        }
        (folder / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return digest

    @classmethod
    def load(cls, folder: Path = MODEL_DIR, trained_on: str | None = None) -> IssueModel:
        """The saved model, after checking its SHA-256 (and, if given, its inputs' fingerprint)."""
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
            data = (folder / ARRAYS_FILE).read_bytes()
        except (OSError, ValueError) as exc:
            raise ArtefactError(f"issue model in {folder} is unreadable: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.get("sha256"):
            raise ArtefactError(
                f"{folder / ARRAYS_FILE} has SHA-256 {digest}, the manifest says "
                f"{manifest.get('sha256')}; rebuild it with `python -m services.memory.issue_model`"
            )
        if trained_on is not None and manifest.get("trained_on") != trained_on:
            raise ArtefactError(
                "the shipped model was fitted on other issue examples or another embedder"
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            detector = LogisticModel(
                arrays["detector_coef"], arrays["detector_intercept"], arrays["detector_classes"]
            )
            categories: LogisticModel | str = (
                str(manifest["only_category"])
                if manifest.get("only_category")
                else LogisticModel(
                    arrays["category_coef"],
                    arrays["category_intercept"],
                    arrays["category_classes"],
                )
            )
        return cls(detector, categories, threshold=float(manifest.get("threshold", THRESHOLD)))


def build(folder: Path = MODEL_DIR) -> str:
    """Fit on the default terms file's examples and write the artefact; returns its hash."""
    embedder = MiniLmEmbedder()
    texts, labels = training_set(load_cases(ISSUE_SET, TRAIN_SPLIT), load_terms().issue_examples)
    model = IssueModel.fit(embedder.embed(texts), labels)
    trained_on = fingerprint(embedder.model_id, REGULARISATION_C, texts, labels)
    about = {
        "c": REGULARISATION_C,
        "threshold": THRESHOLD,
        "embedder": embedder.model_id,
        "texts": len(texts),
        "issues": sum(label is not None for label in labels),
    }
    return model.save(folder, trained_on, about)


def main(argv: Sequence[str] | None = None) -> None:
    """Rebuild `data/issue-model.*` from the labelled set and the default terms file."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="where to write the model")
    args = parser.parse_args(argv)
    print(f"wrote {args.out / ARRAYS_FILE} (sha256 {build(args.out)})")


if __name__ == "__main__":
    main()
