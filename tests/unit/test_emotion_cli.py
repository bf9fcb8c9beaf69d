"""Unit tests for `cbd emotion analyze` and `cbd emotion evaluate`."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
from pathlib import Path

import pytest

from cbd import emotion
from services.emotion import corpora, dataset
from services.emotion.analyzer import EmotionAnalyzer

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS_KEYS = {"label", "scores", "sentiment", "intensity", "signals"}
TABLE_HEADER = ["model", "accuracy", "macro-F1", "sign"]


@pytest.fixture(scope="module")
def trained() -> EmotionAnalyzer:
    """One trained analyzer for the whole module (training takes seconds)."""
    return EmotionAnalyzer()


@pytest.fixture(autouse=True)
def reuse_analyzer(trained: EmotionAnalyzer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emotion, "EmotionAnalyzer", lambda: trained)


def test_single_text_prints_one_pretty_json_object() -> None:
    out = io.StringIO()

    rc = emotion.analyze("thank you so much, that fixed it!", io.StringIO(), out)

    assert rc == 0
    text = out.getvalue()
    assert text.endswith("}\n")
    assert "\n  " in text  # indented
    result = json.loads(text)
    assert set(result) >= ANALYSIS_KEYS
    assert result["label"] == "joy"
    assert isinstance(result["scores"], dict)
    assert -1.0 <= result["sentiment"] <= 1.0
    assert 0.0 <= result["intensity"] <= 1.0
    assert isinstance(result["signals"], list)


def test_json_lines_one_output_per_non_blank_line_in_order() -> None:
    lines = [
        json.dumps({"text": "thank you so much, that fixed it!"}),  # 1 ok
        "this is not json",  # 2 error
        "",  # 3 blank: skipped
        json.dumps({"message": "no text here"}),  # 4 error
        json.dumps({"text": 42}),  # 5 error
        json.dumps({"text": ""}),  # 6 ok: analysed as unreadable
        "   ",  # 7 blank: skipped
        json.dumps(["text", "in a list"]),  # 8 error
        json.dumps({"text": "I have asked three times and it is STILL broken!!"}),  # 9 ok
    ]
    out = io.StringIO()

    rc = emotion.analyze(None, io.StringIO("\n".join(lines) + "\n"), out)

    assert rc == 1
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 7
    assert rows[0]["label"] == "joy"
    assert rows[1]["error"].startswith("line 2: ")
    assert rows[2]["error"].startswith("line 4: ")
    assert "text" in rows[2]["error"]
    assert rows[3]["error"].startswith("line 5: ")
    assert "text" in rows[3]["error"]
    assert rows[4]["label"] == "neutral"
    assert rows[4]["confidence"] == 0.0
    assert rows[5]["error"].startswith("line 8: ")
    assert rows[6]["label"] in {"frustration", "anger"}
    for i in (0, 4, 6):
        assert set(rows[i]) >= ANALYSIS_KEYS
        assert "error" not in rows[i]
    for i in (1, 2, 3, 5):
        assert set(rows[i]) == {"error"}


def test_json_lines_all_valid_returns_zero() -> None:
    stdin = io.StringIO(
        json.dumps({"text": "where is my parcel?"})
        + "\n\n"
        + json.dumps({"text": "thanks, that's great"})
        + "\n"
    )
    out = io.StringIO()

    assert emotion.analyze(None, stdin, out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 2
    assert all(set(r) >= ANALYSIS_KEYS for r in rows)


def test_json_lines_empty_input() -> None:
    out = io.StringIO()

    assert emotion.analyze(None, io.StringIO(""), out) == 0
    assert out.getvalue() == ""


def test_json_lines_order_kept_across_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emotion, "BATCH", 2)
    texts = ["thank you, brilliant!", None, "I am furious!!", None, "hello", "great, thanks!"]
    lines = [json.dumps({"text": t}) if t is not None else "{broken" for t in texts]
    out = io.StringIO()

    rc = emotion.analyze(None, io.StringIO("\n".join(lines)), out)

    assert rc == 1
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == len(texts)
    for number, (text, row) in enumerate(zip(texts, rows, strict=True), 1):
        if text is None:
            assert row["error"].startswith(f"line {number}: ")
        else:
            assert "label" in row
    assert rows[0]["label"] == "joy"
    assert rows[5]["label"] == "joy"


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    rows = [
        {"text": "thank you so much, that fixed it!", "label": "joy"},
        {"text": "brilliant, thanks for the quick help", "label": "joy"},
        {"text": "This is UNACCEPTABLE, I am furious!!", "label": "anger"},
        {"text": "I've asked three times and it's still not fixed", "label": "frustration"},
        {"text": "I don't understand which plan I'm on?", "label": "confusion"},
        {"text": "I'm really worried someone used my card for fraud", "label": "anxiety"},
        {"text": "Please update my address to 5 Hill Road.", "label": "neutral"},
    ]
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_evaluate_prints_both_reports_and_the_comparison(labelled: Path) -> None:
    out = io.StringIO()

    rc = emotion.evaluate(labelled, ["model", "lexicon"], out)

    assert rc == 0
    text = out.getvalue()
    assert "model on small.jsonl: n=7" in text
    assert "lexicon on small.jsonl: n=7" in text
    assert text.count("macro-F1=") == 2
    assert "confusion (rows: true, columns: predicted)" in text
    header = next(line for line in text.splitlines() if line.split() == TABLE_HEADER)
    table = text.split(header, 1)[1].splitlines()
    assert [row.split()[0] for row in table if row.strip()] == ["model", "lexicon"]


def test_evaluate_single_model_has_no_comparison_table(labelled: Path) -> None:
    out = io.StringIO()

    assert emotion.evaluate(labelled, ["lexicon"], out) == 0
    assert "lexicon on small.jsonl" in out.getvalue()
    assert not any(line.split() == TABLE_HEADER for line in out.getvalue().splitlines())


def test_evaluate_as_json(labelled: Path) -> None:
    out = io.StringIO()

    rc = emotion.evaluate(labelled, ["model", "lexicon"], out, as_json=True)

    assert rc == 0
    data = json.loads(out.getvalue())
    assert set(data) == {"model", "lexicon"}
    model = data["model"]
    assert 0.0 <= model["macro_f1"] <= 1.0
    assert model["n"] == 7
    assert set(model["confusion"]) == {
        "anger",
        "frustration",
        "anxiety",
        "sadness",
        "confusion",
        "joy",
        "neutral",
    }
    assert sum(v for row in model["confusion"].values() for v in row.values()) == 7
    assert model["confusion"]["joy"]["joy"] >= 1


def test_evaluate_unknown_model_raises(labelled: Path) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        emotion.evaluate(labelled, ["nope"], io.StringIO())


def test_main_dispatches_analyze(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)

    rc = emotion.main(argparse.Namespace(action="analyze", text="thanks, that's perfect!"))

    assert rc == 0
    assert json.loads(out.getvalue())["label"] == "joy"


def test_console_script_analyze() -> None:
    proc = subprocess.run(
        [".venv/bin/cbd", "emotion", "analyze", "thank you so much, that fixed it!"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["label"] == "joy"


def test_evaluate_without_a_file_reports_every_source(
    labelled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = dataset.read_jsonl(labelled)
    monkeypatch.setattr(emotion, "sources", lambda: {"own": small, "public": small[:3]})
    monkeypatch.setattr(emotion, "sentiment_sources", lambda: {"reviews": REVIEWS})
    out = io.StringIO()

    assert emotion.evaluate_sources(["model", "majority"], out) == 0

    text, signs_part = out.getvalue().split("sentiment sign on real customers", 1)
    assert "model on own: n=7" in text
    assert "majority on public: n=3" in text
    table = text.split("source", 1)[1].splitlines()[1:]
    assert [row.split()[:2] for row in table if row.strip()] == [
        ["own", "model"],
        ["own", "majority"],
        ["public", "model"],
        ["public", "majority"],
    ]
    signs = signs_part.splitlines()[2:]
    # The model reads both reviews' polarity; a constant zero sentiment gets none right.
    assert [row.split() for row in signs if row.strip()] == [
        ["reviews", "model", "2", "1.000", "1.000", "1.000"],
        ["reviews", "majority", "2", "0.000", "0.000", "0.000"],
    ]


REVIEWS = [
    corpora.SentimentExample("Great phone, works perfectly, love it!", "positive", "amazon"),
    corpora.SentimentExample("Terrible, it broke after a day. Waste of money.", "negative", "yelp"),
]


def test_evaluate_every_source_as_json_has_the_sentiment_signs(
    labelled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = dataset.read_jsonl(labelled)
    monkeypatch.setattr(emotion, "sources", lambda: {"own": small})
    monkeypatch.setattr(emotion, "sentiment_sources", lambda: {"reviews": REVIEWS})
    out = io.StringIO()

    assert emotion.evaluate_sources(["model"], out, as_json=True) == 0

    payload = json.loads(out.getvalue())
    assert payload["own"]["model"]["n"] == 7
    assert payload["sentiment sign"]["reviews"]["model"] == {
        "n": 2,
        "sign_accuracy": 1.0,
        "positive_right": 1.0,
        "negative_right": 1.0,
    }


def test_every_source_is_a_test_split_never_training_data() -> None:
    names = emotion.sources()
    assert set(names) == {"own test.jsonl", "own heldout.jsonl", "GoEmotions test (mapped)"}
    assert len(names["GoEmotions test (mapped)"]) == 4674


def test_the_sentiment_sources_are_the_uci_review_sentences_never_training_data() -> None:
    signs = emotion.sentiment_sources()
    assert set(signs) == {"UCI sentences, amazon", "UCI sentences, yelp"}
    for examples in signs.values():
        polarity = [ex.sentiment for ex in examples]
        assert (polarity.count("positive"), polarity.count("negative")) == (500, 500)
    # Evaluation only: none of it is in what the model trains or selects on.
    seen = {
        ex.text for split in ("train", "dev") for ex in corpora.load_public("goemotions", split)
    }
    seen |= {ex.text for ex in dataset.load("train")}
    assert not seen & {ex.text for examples in signs.values() for ex in examples}
