"""Import public corpora into the compact mapped JSON Lines the emotion model trains on.

Run from a checkout of GoEmotions' public repository (see `data/DATASHEET.md`):

    python -m services.emotion.corpora goemotions PATH/TO/GoEmotions-pytorch/data/original

It writes `data/public/goemotions.jsonl.gz` with one object per item: `text`, `split`
(train / dev / test) and `label` (one of our seven). Test splits are written so
`cbd emotion evaluate` can report them; training and model selection never read them.

Sentiment-only corpora keep their own classes and come in for evaluation only (split `test`),
never for training or selection. `uci_sentences` is the UCI Sentiment Labelled Sentences
(Amazon and Yelp review sentences, positive or negative), from a copy of the dataset's files:

    python -m services.emotion.corpora uci_sentences PATH/TO/sentiment-labelled-sentences
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.emotion.dataset import Example
from shared.events import EmotionLabel

PUBLIC_DIR = Path(__file__).parent / "data" / "public"
LABEL_MAP_FILE = PUBLIC_DIR / "label_map.yaml"
SPLITS = ("train", "dev", "test")


def goemotions_map() -> dict[str, EmotionLabel | None]:
    """GoEmotions' 28 labels -> ours; None for the labels we drop."""
    raw = yaml.safe_load(LABEL_MAP_FILE.read_text(encoding="utf-8"))["goemotions"]
    mapping: dict[str, EmotionLabel | None] = {}
    for ours, theirs in raw.items():
        target = None if ours == "dropped" else EmotionLabel(ours)
        for name in theirs:
            if name in mapping:
                raise ValueError(f"GoEmotions label {name!r} is mapped twice")
            mapping[name] = target
    if len(mapping) != 28:
        raise ValueError(f"GoEmotions has 28 labels, the map covers {len(mapping)}")
    return mapping


def map_goemotions(names: Iterable[str], mapping: Mapping[str, EmotionLabel | None]) -> str | None:
    """Our label for an item with these GoEmotions labels, or None when it is left out."""
    targets = {mapping[n] for n in names}
    if len(targets) != 1 or None in targets:
        return None
    (label,) = targets
    return label.value if label is not None else None


def read_goemotions(folder: Path) -> Iterator[dict[str, Any]]:
    """GoEmotions' original train/dev/test TSVs (text, comma-separated label ids, id)."""
    names = (folder / "labels.txt").read_text(encoding="utf-8").split()
    mapping = goemotions_map()
    for split in SPLITS:
        with (folder / f"{split}.tsv").open(encoding="utf-8") as f:
            for line in f:
                text, ids, _ = line.rstrip("\n").split("\t")
                label = map_goemotions([names[int(i)] for i in ids.split(",")], mapping)
                if label is not None:
                    yield {"text": text, "label": label, "split": split}


UCI_FILES = {"amazon": "amazon_cells_labelled.txt", "yelp": "yelp_labelled.txt"}
"""The UCI files read: sentences about products, sellers and restaurants. The third file
(IMDB) is left out: film reviews say how people feel about a film, not about a company."""
UCI_POLARITY = {"0": "negative", "1": "positive"}


def read_uci_sentences(folder: Path) -> Iterator[dict[str, Any]]:
    """UCI Sentiment Labelled Sentences: `sentence<TAB>0|1` lines, every one for evaluation.

    Lines without a tab (a header some copies add) are skipped; a label other than 0 or 1 is
    an error, so a damaged copy is never imported in part."""
    for source, name in UCI_FILES.items():
        with (folder / name).open(encoding="utf-8", newline="\n") as f:
            for number, line in enumerate(f, 1):
                if "\t" not in line:
                    continue
                text, polarity = line.rstrip("\r\n").rsplit("\t", 1)
                if polarity.strip() not in UCI_POLARITY:
                    raise ValueError(f"{name} line {number}: label {polarity!r} is not 0 or 1")
                yield {
                    "text": text.strip(),
                    "sentiment": UCI_POLARITY[polarity.strip()],
                    "split": "test",
                    "source": source,
                }


def write(corpus: str, rows: Iterable[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Write `data/public/<corpus>.jsonl.gz` reproducibly (no timestamp in the gzip header).

    Every row is read before the file is opened: a source that fails half way leaves the
    committed file as it was, not cut short."""
    counts: Counter[tuple[str, str]] = Counter()
    path = PUBLIC_DIR / f"{corpus}.jsonl.gz"
    every = list(rows)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for row in every:
            counts[(row["split"], row.get("label") or row["sentiment"])] += 1
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    return counts


def _rows(corpus: str) -> list[dict[str, Any]]:
    """Every row of `data/public/<corpus>.jsonl.gz`."""
    with gzip.open(PUBLIC_DIR / f"{corpus}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_public(corpus: str, split: str) -> list[Example]:
    """One split of a mapped public corpus in `data/public/<corpus>.jsonl.gz`."""
    return [
        Example(text=row["text"], label=EmotionLabel(row["label"]), domain=corpus)
        for row in _rows(corpus)
        if row["split"] == split and "label" in row
    ]


@dataclass(frozen=True)
class SentimentExample:
    """One item of a sentiment-only corpus: its text, polarity and where it came from."""

    text: str
    sentiment: str
    """`positive`, `negative` or `neutral`."""
    source: str


def load_sentiment(corpus: str, split: str = "test") -> list[SentimentExample]:
    """One split of a sentiment-only corpus in `data/public/<corpus>.jsonl.gz`."""
    return [
        SentimentExample(text=row["text"], sentiment=row["sentiment"], source=row["source"])
        for row in _rows(corpus)
        if row["split"] == split and "sentiment" in row
    ]


READERS = {"goemotions": read_goemotions, "uci_sentences": read_uci_sentences}


def main(argv: list[str] | None = None) -> int:
    """Import one corpus and print its counts per split and label."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=sorted(READERS))
    parser.add_argument("source", type=Path)
    args = parser.parse_args(argv)
    counts = write(args.corpus, READERS[args.corpus](args.source))
    for (split, label), n in sorted(counts.items()):
        print(f"{split}\t{label}\t{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
