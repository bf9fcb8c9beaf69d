"""`cbd emotion analyze` and `cbd emotion evaluate`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from services.emotion import corpora, dataset, evaluation
from services.emotion.analyzer import EmotionAnalyzer, own_data_model
from shared.events import EmotionAnalysis

BATCH = 64
BASELINES = ("model", "own", "lexicon", "vader", "majority", "nade")


def analysis_json(analysis: EmotionAnalysis) -> dict[str, Any]:
    """The analysis as a JSON-ready dict."""
    return analysis.model_dump(mode="json")


def _batches(lines: TextIO) -> Iterator[list[tuple[int, str | None, str | None]]]:
    """(line number, text or None, error or None), BATCH at a time."""
    batch: list[tuple[int, str | None, str | None]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text = row["text"] if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise TypeError('expected an object with a string "text"')
            batch.append((number, text, None))
        except (ValueError, KeyError, TypeError) as exc:
            batch.append((number, None, f"line {number}: {exc}"))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def analyze(text: str | None, stdin: TextIO, stdout: TextIO) -> int:
    """One text as pretty JSON, or JSON Lines in and out (one result per input line)."""
    analyzer = EmotionAnalyzer()
    if text is not None:
        stdout.write(json.dumps(analysis_json(analyzer.analyze(text)), indent=2) + "\n")
        return 0
    failures = 0
    for batch in _batches(stdin):
        texts = [t for _, t, _ in batch if t is not None]
        results = iter(analyzer.analyze_batch(texts))
        for _, t, error in batch:
            if t is None:
                failures += 1
                stdout.write(json.dumps({"error": error}) + "\n")
            else:
                stdout.write(json.dumps(analysis_json(next(results))) + "\n")
        stdout.flush()
    return 1 if failures else 0


def evaluate(path: Path, models: Sequence[str], stdout: TextIO, as_json: bool = False) -> int:
    """Score each model on a labelled JSON Lines file and print the reports."""
    predictors = {name: _predictor(name) for name in models}
    return _evaluate_sets({path.name: dataset.read_jsonl(path)}, predictors, stdout, as_json)


def sources() -> dict[str, list[dataset.Example]]:
    """Every test set, per source: our own two and each public corpus's test split."""
    return {
        "own test.jsonl": dataset.load("test"),
        "own heldout.jsonl": dataset.load_heldout(),
        "GoEmotions test (mapped)": corpora.load_public("goemotions", "test"),
    }


def sentiment_sources() -> dict[str, list[corpora.SentimentExample]]:
    """Every sentiment-only test source: real customers' words with a polarity, no emotion."""
    sentences = corpora.load_sentiment("uci_sentences")
    return {
        f"UCI sentences, {where}": [ex for ex in sentences if ex.source == where]
        for where in corpora.UCI_FILES
    }


def evaluate_sources(models: Sequence[str], stdout: TextIO, as_json: bool = False) -> int:
    """Score each model on every test source and print one report per source and model,
    then the sentiment sign on each sentiment-only source."""
    predictors = {name: _predictor(name) for name in models}
    signs = {
        source: {
            name: evaluation.score_sign(
                [ex.sentiment for ex in examples], predict([ex.text for ex in examples])
            )
            for name, predict in predictors.items()
        }
        for source, examples in sentiment_sources().items()
    }
    extra = {
        source: {n: r.as_dict() for n, r in by_model.items()} for source, by_model in signs.items()
    }
    rc = _evaluate_sets(sources(), predictors, stdout, as_json, extra)
    if as_json:
        return rc
    stdout.write("\nsentiment sign on real customers' review sentences (evaluation only)\n")
    stdout.write(f"{'source':<28}{'model':<10}{'n':>6}{'sign':>8}{'pos ok':>8}{'neg ok':>8}\n")
    for source, by_model in signs.items():
        for name, r in by_model.items():
            stdout.write(
                f"{source:<28}{name:<10}{r.n:>6}{r.sign_accuracy:>8.3f}"
                f"{r.positive_right:>8.3f}{r.negative_right:>8.3f}\n"
            )
    return rc


def _evaluate_sets(
    sets: dict[str, list[dataset.Example]],
    predictors: dict[str, evaluation.Predictor],
    stdout: TextIO,
    as_json: bool,
    signs: dict[str, dict[str, Any]] | None = None,
) -> int:
    reports: dict[str, dict[str, evaluation.Report]] = {}
    for source, examples in sets.items():
        texts = [ex.text for ex in examples]
        gold = [ex.label for ex in examples]
        reports[source] = {
            name: evaluation.score(gold, predict(texts)) for name, predict in predictors.items()
        }
    if as_json:
        payload: dict[str, Any] = {
            source: {n: r.as_dict() for n, r in by_model.items()}
            for source, by_model in reports.items()
        }
        if signs is not None:
            payload["sentiment sign"] = signs
        elif len(sets) == 1:
            (payload,) = payload.values()
        stdout.write(json.dumps(payload, indent=2) + "\n")
        return 0
    for source, by_model in reports.items():
        for name, report in by_model.items():
            stdout.write(evaluation.format_report(f"{name} on {source}", report) + "\n\n")
    if len(sets) == 1 and len(predictors) > 1:
        stdout.write(f"{'model':<10}{'accuracy':>10}{'macro-F1':>10}{'sign':>8}\n")
    elif len(sets) > 1:
        stdout.write(f"{'source':<28}{'model':<10}{'accuracy':>10}{'macro-F1':>10}{'sign':>8}\n")
    else:
        return 0
    for source, by_model in reports.items():
        for name, r in by_model.items():
            sign = "n/a" if r.sign_accuracy is None else f"{r.sign_accuracy:.3f}"
            where = f"{source:<28}" if len(sets) > 1 else ""
            stdout.write(f"{where}{name:<10}{r.accuracy:>10.3f}{r.macro_f1:>10.3f}{sign:>8}\n")
    return 0


def _predictor(name: str) -> evaluation.Predictor:
    if name == "model":
        analyzer = EmotionAnalyzer()

        def predict(texts: Sequence[str]) -> list[evaluation.Prediction]:
            return [(a.label, a.sentiment) for a in analyzer.analyze_batch(texts)]

        return predict
    if name == "own":
        own = EmotionAnalyzer(model=own_data_model())

        def predict_own(texts: Sequence[str]) -> list[evaluation.Prediction]:
            return [(a.label, a.sentiment) for a in own.analyze_batch(texts)]

        return predict_own
    if name == "lexicon":
        return evaluation.lexicon_predictor()
    if name == "vader":
        return evaluation.vader_predictor()
    if name == "majority":
        return evaluation.majority_predictor()
    if name == "nade":
        return evaluation.nade_predictor()
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(BASELINES)}")


def main(args: Any) -> int:
    """Dispatch `cbd emotion ...`."""
    if args.action == "analyze":
        return analyze(args.text, sys.stdin, sys.stdout)
    models = list(BASELINES) if args.model == "all" else [args.model]
    if args.file is None:
        return evaluate_sources(models, sys.stdout, as_json=args.json)
    return evaluate(Path(args.file), models, sys.stdout, as_json=args.json)
