"""Unit tests for importing public corpora (`services.emotion.corpora`)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from services.emotion import corpora


def uci_copy(folder: Path, amazon: str, yelp: str = "Great food.\t1\n") -> Path:
    """A copy of the UCI files as some public copies have them."""
    (folder / "amazon_cells_labelled.txt").write_bytes(amazon.encode("utf-8"))
    (folder / "yelp_labelled.txt").write_bytes(yelp.encode("utf-8"))
    return folder


def test_uci_sentences_are_read_with_their_polarity_and_kept_for_evaluation(
    tmp_path: Path,
) -> None:
    # A header line some copies add, CRLF endings, a tab inside neither text nor label.
    folder = uci_copy(tmp_path, "Review\r\nWorks great!  \t1\r\nBattery died in a week.\t0\r\n")

    rows = list(corpora.read_uci_sentences(folder))

    assert rows == [
        {"text": "Works great!", "sentiment": "positive", "split": "test", "source": "amazon"},
        {
            "text": "Battery died in a week.",
            "sentiment": "negative",
            "split": "test",
            "source": "amazon",
        },
        {"text": "Great food.", "sentiment": "positive", "split": "test", "source": "yelp"},
    ]


def test_a_damaged_copy_is_refused_and_the_committed_file_stays_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = tmp_path / "public"
    public.mkdir()
    monkeypatch.setattr(corpora, "PUBLIC_DIR", public)
    good = uci_copy(tmp_path, "Works great!\t1\n")
    corpora.write("uci_sentences", corpora.read_uci_sentences(good))
    before = (public / "uci_sentences.jsonl.gz").read_bytes()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    uci_copy(damaged, "Works great!\t1\nOK\t5\n")

    with pytest.raises(ValueError, match="line 2: label '5' is not 0 or 1"):
        corpora.write("uci_sentences", corpora.read_uci_sentences(damaged))

    assert (public / "uci_sentences.jsonl.gz").read_bytes() == before
    with gzip.open(public / "uci_sentences.jsonl.gz", "rt", encoding="utf-8") as f:
        assert [json.loads(line)["source"] for line in f] == ["amazon", "yelp"]
    assert [ex.sentiment for ex in corpora.load_sentiment("uci_sentences")] == [
        "positive",
        "positive",
    ]


def test_the_import_command_writes_the_corpus_and_prints_its_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(corpora, "PUBLIC_DIR", tmp_path)
    folder = tmp_path / "src"
    folder.mkdir()
    uci_copy(folder, "Works great!\t1\nBroke.\t0\n")

    assert corpora.main(["uci_sentences", str(folder)]) == 0

    assert capsys.readouterr().out.splitlines() == ["test\tnegative\t1", "test\tpositive\t2"]
    assert len(corpora.load_sentiment("uci_sentences")) == 3
