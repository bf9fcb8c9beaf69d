"""Scoring emotion predictions, and the lexicon-only baselines the model must beat."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.emotion.lexicon import LexiconAnalyzer
from shared.events import NEGATIVE_EMOTIONS, EmotionLabel

LABELS: tuple[EmotionLabel, ...] = tuple(EmotionLabel)
POSITIVE = frozenset({EmotionLabel.JOY})

Prediction = tuple[EmotionLabel, float]
"""A label and a sentiment in [-1, 1]."""
Predictor = Callable[[Sequence[str]], list[Prediction]]


@dataclass(frozen=True)
class LabelScore:
    """Precision, recall and F1 for one label."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Report:
    """How well predictions match the gold labels."""

    n: int
    accuracy: float
    macro_f1: float
    per_label: dict[EmotionLabel, LabelScore]
    confusion: dict[EmotionLabel, dict[EmotionLabel, int]]
    sign_accuracy: float | None
    """Share of clearly positive (joy) or negative (anger, frustration, sadness, anxiety)
    messages whose sentiment has the right sign."""
    sign_n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "sign_accuracy": None if self.sign_accuracy is None else round(self.sign_accuracy, 4),
            "per_label": {
                label.value: {
                    "precision": round(s.precision, 4),
                    "recall": round(s.recall, 4),
                    "f1": round(s.f1, 4),
                    "support": s.support,
                }
                for label, s in self.per_label.items()
            },
            "confusion": {
                t.value: {p.value: c for p, c in row.items()} for t, row in self.confusion.items()
            },
        }


def score(
    gold: Sequence[EmotionLabel],
    predicted: Sequence[Prediction],
) -> Report:
    """Accuracy, macro-F1 over the seven labels, per-label scores, confusion, sentiment sign."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    confusion = {t: dict.fromkeys(LABELS, 0) for t in LABELS}
    for truth, (label, _) in zip(gold, predicted, strict=True):
        confusion[truth][label] += 1
    per_label = {}
    for label in LABELS:
        tp = confusion[label][label]
        fp = sum(confusion[t][label] for t in LABELS) - tp
        fn = sum(confusion[label].values()) - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = LabelScore(precision, recall, f1, tp + fn)
    present = [s for s in per_label.values() if s.support]
    signed = [
        (truth in POSITIVE and sentiment > 0) or (truth in NEGATIVE_EMOTIONS and sentiment < 0)
        for truth, (_, sentiment) in zip(gold, predicted, strict=True)
        if truth in POSITIVE or truth in NEGATIVE_EMOTIONS
    ]
    n = len(gold)
    return Report(
        n=n,
        accuracy=sum(confusion[t][t] for t in LABELS) / n if n else 0.0,
        macro_f1=sum(s.f1 for s in present) / len(present) if present else 0.0,
        per_label=per_label,
        confusion=confusion,
        sign_accuracy=sum(signed) / len(signed) if signed else None,
        sign_n=len(signed),
    )


@dataclass(frozen=True)
class SignReport:
    """How often the sentiment's sign matches a sentiment-only corpus's polarity."""

    n: int
    sign_accuracy: float
    """Share of positive and negative items whose sentiment has their sign (zero is wrong)."""
    positive_right: float
    negative_right: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "n": self.n,
            "sign_accuracy": round(self.sign_accuracy, 4),
            "positive_right": round(self.positive_right, 4),
            "negative_right": round(self.negative_right, 4),
        }


def score_sign(polarity: Sequence[str], predicted: Sequence[Prediction]) -> SignReport:
    """Sign accuracy over the `positive` and `negative` items (neutral ones are not scored)."""
    if len(polarity) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    right: dict[str, list[bool]] = {"positive": [], "negative": []}
    for gold, (_, sentiment) in zip(polarity, predicted, strict=True):
        if gold in right:
            right[gold].append(sentiment > 0 if gold == "positive" else sentiment < 0)
    every = right["positive"] + right["negative"]

    def share(values: list[bool]) -> float:
        return sum(values) / len(values) if values else 0.0

    return SignReport(
        n=len(every),
        sign_accuracy=share(every),
        positive_right=share(right["positive"]),
        negative_right=share(right["negative"]),
    )


def format_report(name: str, report: Report) -> str:
    """A report for a terminal: headline figures, per-label table, confusion matrix."""
    short = {label: label.value[:5] for label in LABELS}
    sign = "n/a" if report.sign_accuracy is None else f"{report.sign_accuracy:.3f}"
    lines = [
        f"{name}: n={report.n}  accuracy={report.accuracy:.3f}  macro-F1={report.macro_f1:.3f}  "
        f"sentiment sign={sign} (n={report.sign_n})",
        "",
        f"{'label':<12}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}",
    ]
    for label, s in report.per_label.items():
        lines.append(
            f"{label.value:<12}{s.precision:>10.3f}{s.recall:>8.3f}{s.f1:>8.3f}{s.support:>9}"
        )
    lines += ["", "confusion (rows: true, columns: predicted)"]
    lines.append(" " * 12 + "".join(f"{short[p]:>7}" for p in LABELS))
    for truth in LABELS:
        lines.append(
            f"{truth.value:<12}" + "".join(f"{report.confusion[truth][p]:>7}" for p in LABELS)
        )
    return "\n".join(lines)


def lexicon_predictor(lexicon: LexiconAnalyzer | None = None) -> Predictor:
    """The curated-lexicon + VADER analyzer on its own."""
    lex = lexicon or LexiconAnalyzer()

    def predict(texts: Sequence[str]) -> list[Prediction]:
        return [(a.label, a.sentiment) for a in (lex.analyze(t) for t in texts)]

    return predict


def vader_predictor() -> Predictor:
    """VADER's sign alone: positive -> joy, negative -> frustration (the commonest negative
    feeling in customer service), else neutral."""
    vader = SentimentIntensityAnalyzer()

    def predict(texts: Sequence[str]) -> list[Prediction]:
        out: list[Prediction] = []
        for text in texts:
            compound = float(vader.polarity_scores(text)["compound"])
            if compound >= 0.05:
                out.append((EmotionLabel.JOY, compound))
            elif compound <= -0.05:
                out.append((EmotionLabel.FRUSTRATION, compound))
            else:
                out.append((EmotionLabel.NEUTRAL, compound))
        return out

    return predict


def majority_predictor(label: EmotionLabel = EmotionLabel.NEUTRAL) -> Predictor:
    """Always the same label with zero sentiment: neutral, the commonest label in real chat."""

    def predict(texts: Sequence[str]) -> list[Prediction]:
        return [(label, 0.0) for _ in texts]

    return predict


# nade scores Plutchik's eight emotions (0-1 each); this is how they map onto ours.
NADE_TO_CBD: dict[str, EmotionLabel] = {
    "anger": EmotionLabel.ANGER,
    "disgust": EmotionLabel.ANGER,
    "fear": EmotionLabel.ANXIETY,
    "sadness": EmotionLabel.SADNESS,
    "joy": EmotionLabel.JOY,
    "trust": EmotionLabel.JOY,
    "surprise": EmotionLabel.CONFUSION,
    "anticipation": EmotionLabel.NEUTRAL,
}
NADE_NEUTRAL_BELOW = 0.2
"""Below this top intensity nade has found no feeling worth naming: neutral."""


def nade_predictor() -> Predictor:
    """nade's Plutchik intensities, mapped to our labels (needs the `nade` package)."""
    from nade import Nade  # noqa: PLC0415 (a development-only dependency, for this baseline)

    model = Nade()

    def predict(texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        raw = model.predict(list(texts))
        columns = {name: raw[name].to_pylist() for name in NADE_TO_CBD}
        out: list[Prediction] = []
        for i in range(len(texts)):
            mapped = dict.fromkeys(LABELS, 0.0)
            for name, label in NADE_TO_CBD.items():
                mapped[label] = max(mapped[label], float(columns[name][i] or 0.0))
            top = max(mapped, key=lambda lab: mapped[lab])
            if mapped[top] < NADE_NEUTRAL_BELOW:
                top = EmotionLabel.NEUTRAL
            positive = float(columns["joy"][i] or 0.0) + float(columns["trust"][i] or 0.0)
            negative = sum(
                float(columns[n][i] or 0.0) for n in ("anger", "disgust", "fear", "sadness")
            )
            out.append((top, max(-1.0, min(1.0, positive - negative))))
        return out

    return predict
