"""Issue extraction quality: is a customer's message a problem to remember, and which kind?

Scored on the hand-labelled set in `data/issues.jsonl` (see data/ISSUES_DATASHEET.md). Each
message goes through the same `RuleExtractor` the service runs, with the message's MiniLM
embedding (for the example fallback) and a sentiment. The service gets that sentiment from the
emotion service; a service never imports another, so here VADER's compound stands in for it
(the emotion service's sentiment is a blend that starts from VADER's).

Also scored on public text we did not write (`data/public_issues.jsonl`: Banking77 and CLINC150
intents mapped onto issue / no issue, see `public_issues`).

`python -m services.memory.issue_evaluation [--split test|heldout|dev|train|all]` prints a table:
precision and recall of "is an issue" and accuracy of the category among the issues found, per
set (own, each public source, both public ones). `--set own` (or `banking77`, `clinc150`,
`public`) prints that set's figures per category and every miss. `--tune` prints the
cross-validation on the train split that chose the issue model's settings.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.memory.extraction import RuleExtractor
from services.memory.issue_model import (
    TRAIN_SPLIT,
    IssueCase,
    IssueModel,
    embed_in_batches,
    fit_shipped,
    load_cases,
    training_set,
)
from services.memory.public_issues import load_public_cases
from services.memory.terms import load_terms
from shared.embedding import Embedder, MiniLmEmbedder


@dataclass
class IssueScore:
    """What the extractor got right and wrong on a set of cases."""

    cases: int = 0
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    right_category: int = 0
    per_category: Counter[str] = field(default_factory=Counter)
    per_category_right: Counter[str] = field(default_factory=Counter)
    misses: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        """Of the messages called issues, the share that are."""
        called = self.true_positives + self.false_positives
        return self.true_positives / called if called else 0.0

    @property
    def recall(self) -> float:
        """Of the issues, the share called issues."""
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 0.0

    @property
    def category_accuracy(self) -> float:
        """Of the issues found, the share given the labelled category."""
        return self.right_category / self.true_positives if self.true_positives else 0.0


SETS: dict[str, Callable[[str | None], list[IssueCase]]] = {
    "own": lambda split: load_cases(split=split),
    "banking77": lambda split: load_public_cases(split, "banking77"),
    "clinc150": lambda split: load_public_cases(split, "clinc150"),
}
"""The labelled sets by name: the project's own and each public source."""


def evaluate(
    cases: Sequence[IssueCase], embedder: Embedder, extractor: RuleExtractor | None = None
) -> IssueScore:
    """Run the extractor on every case and count its answers."""
    extractor = extractor or RuleExtractor(embedder)
    vader = SentimentIntensityAnalyzer()
    vectors = embed_in_batches(embedder, [c.text for c in cases])
    score = IssueScore()
    for case, vector in zip(cases, vectors, strict=True):
        sentiment = float(vader.polarity_scores(case.text)["compound"])
        found = extractor.extract(case.text, sentiment=sentiment, vector=vector)
        predicted = found.raised[0].category if found.raised else None
        score.cases += 1
        if case.category is not None:
            score.per_category[case.category] += 1
        if predicted is not None and case.category is not None:
            score.true_positives += 1
            if predicted == case.category:
                score.right_category += 1
                score.per_category_right[case.category] += 1
            else:
                score.misses.append(f"{case.case_id} category {predicted} != {case.category}")
        elif predicted is not None:
            score.false_positives += 1
            score.misses.append(f"{case.case_id} false issue {predicted}: {case.text!r}")
        elif case.category is not None:
            score.false_negatives += 1
            score.misses.append(f"{case.case_id} missed {case.category}: {case.text!r}")
    return score


def report(score: IssueScore, name: str) -> str:
    """The figures as a few lines of text."""
    lines = [
        f"{name}: {score.cases} messages, {score.true_positives + score.false_negatives} issues",
        f"  is an issue: precision {score.precision:.3f}  recall {score.recall:.3f}",
        f"  category accuracy (issues found): {score.category_accuracy:.3f}",
    ]
    for category in sorted(score.per_category):
        right, total = score.per_category_right[category], score.per_category[category]
        lines.append(f"    {category:<16} {right}/{total}")
    lines += [f"  {miss}" for miss in score.misses]
    return "\n".join(lines)


def combined(scores: Sequence[IssueScore]) -> IssueScore:
    """Several sets' counts added up, as if scored as one set."""
    total = IssueScore()
    for s in scores:
        total.cases += s.cases
        total.true_positives += s.true_positives
        total.false_positives += s.false_positives
        total.false_negatives += s.false_negatives
        total.right_category += s.right_category
        total.per_category.update(s.per_category)
        total.per_category_right.update(s.per_category_right)
        total.misses += s.misses
    return total


def table(scores: Mapping[str, IssueScore]) -> str:
    """One line per scored set: its size, issues, precision, recall and category accuracy."""
    heads = ("messages", "issues", "precision", "recall", "category")
    lines = [f"{'set':<24} " + " ".join(f"{h:>9}" for h in heads)]
    for name, s in scores.items():
        issues = s.true_positives + s.false_negatives
        lines.append(
            f"{name:<24} {s.cases:>9} {issues:>9} {s.precision:>9.3f} {s.recall:>9.3f} "
            f"{s.category_accuracy:>9.3f}"
        )
    return "\n".join(lines)


def tune(embedder: Embedder, folds: int = 5) -> list[tuple[float, float, float, float]]:
    """Cross-validate the issue model's C and threshold on the train split only.

    Returns (C, threshold, precision, recall) for each setting; the terms file's examples are
    in every training fold and never scored.
    """
    cases = load_cases(split=TRAIN_SPLIT)
    texts, labels = training_set(cases, load_terms().issue_examples)
    vectors = embedder.embed(texts)
    truth = np.array([c.category is not None for c in cases])
    fold_of = np.arange(len(cases)) % folds
    results = []
    for c in (1.0, 4.0, 16.0, 64.0):
        probabilities = np.zeros(len(cases))
        for fold in range(folds):
            held = np.flatnonzero(fold_of == fold)
            keep = [i for i in range(len(texts)) if i >= len(cases) or fold_of[i] != fold]
            model = IssueModel.fit(vectors[keep], [labels[i] for i in keep], c=c)
            probabilities[held] = [model.probability(vectors[i]) for i in held]
        for threshold in (0.4, 0.5, 0.6, 0.7):
            called = probabilities >= threshold
            hits = int((called & truth).sum())
            precision = hits / int(called.sum()) if called.any() else 0.0
            results.append((c, threshold, precision, hits / int(truth.sum())))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Print the per-source table for one split (test by default), or one set's misses."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--split", choices=["test", "heldout", "dev", "train", "all"], default="test"
    )
    parser.add_argument(
        "--set",
        choices=["table", *SETS, "public"],
        default="table",
        help="'table' scores every set on the split; a set's name (public: both sources) "
        "prints its figures per category and its misses",
    )
    parser.add_argument(
        "--tune", action="store_true", help="cross-validate the issue model on the train split"
    )
    parser.add_argument(
        "--fit",
        action="store_true",
        help="refit the shipped issue model (data/issue_model.npz) on the train splits",
    )
    args = parser.parse_args(argv)
    embedder = MiniLmEmbedder()
    if args.fit:
        fit_shipped(embedder, load_terms().issue_examples)
        print("wrote services/memory/data/issue_model.npz")
        return
    if args.tune:
        for c, threshold, precision, recall in tune(embedder):
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            print(
                f"C {c:<5} threshold {threshold:.1f}  precision {precision:.3f}  "
                f"recall {recall:.3f}  F1 {f1:.3f}"
            )
        return
    split = None if args.split == "all" else args.split
    extractor = RuleExtractor(embedder)
    if args.set != "table":
        cases = load_public_cases(split) if args.set == "public" else SETS[args.set](split)
        print(report(evaluate(cases, embedder, extractor), f"{args.set} {args.split}"))
        return
    scores = {
        f"{name} {args.split}": evaluate(cases, embedder, extractor)
        for name, load in SETS.items()
        if (cases := load(split))
    }
    public = [s for name, s in scores.items() if not name.startswith("own")]
    if public:
        scores[f"public {args.split}"] = combined(public)
    print(table(scores))


if __name__ == "__main__":
    main()
