"""Import public corpora into the compact mapped JSON Lines the emotion model trains on.

Run from a checkout of GoEmotions' public repository (see `data/DATASHEET.md`):

    python -m services.emotion.corpora goemotions PATH/TO/GoEmotions-pytorch/data/original

It writes `data/public/goemotions.jsonl.gz` with one object per item: `text`, `split`
(train / dev / test) and `label` (one of our seven). Test splits are written so
`cbd emotion evaluate` can report them; training and model selection never read them.

`read_airline` reads a user's own copy of Twitter US Airline Sentiment (`Tweets.csv`) for
local evaluation only (`cbd emotion evaluate --airline-csv PATH`): that corpus is
CC BY-NC-SA 4.0, which an Apache-2.0 project run commercially cannot ship or train on, so
nothing of it is committed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
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


def hash_split(text: str) -> str:
    """70/10/20 train/dev/test by a hash of the text: stable, and duplicates stay together."""
    bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < 70:
        return "train"
    return "dev" if bucket < 80 else "test"


def read_airline(path: Path) -> Iterator[dict[str, Any]]:
    """Twitter US Airline Sentiment from a user's local `Tweets.csv`, for evaluation only.

    Tweets to six US airlines, three sentiment classes, split 70/10/20 by `hash_split`.
    """
    seen: set[str] = set()
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            text = row["text"].strip()
            # Retweeted copies of one tweet would otherwise straddle the splits.
            if not text or text in seen:
                continue
            seen.add(text)
            yield {"text": text, "sentiment": row["airline_sentiment"], "split": hash_split(text)}


def write(corpus: str, rows: Iterable[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Write `data/public/<corpus>.jsonl.gz` reproducibly (no timestamp in the gzip header)."""
    counts: Counter[tuple[str, str]] = Counter()
    path = PUBLIC_DIR / f"{corpus}.jsonl.gz"
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for row in rows:
            counts[(row["split"], row.get("label") or row["sentiment"])] += 1
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    return counts


def load_public(corpus: str, split: str) -> list[Example]:
    """One split of a mapped public corpus in `data/public/<corpus>.jsonl.gz`."""
    with gzip.open(PUBLIC_DIR / f"{corpus}.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [
        Example(text=row["text"], label=EmotionLabel(row["label"]), domain=corpus)
        for row in rows
        if row["split"] == split and "label" in row
    ]


def main(argv: list[str] | None = None) -> int:
    """Import one corpus and print its counts per split and label."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=["goemotions"])
    parser.add_argument("source", type=Path)
    args = parser.parse_args(argv)
    counts = write(args.corpus, read_goemotions(args.source))
    for (split, label), n in sorted(counts.items()):
        print(f"{split}\t{label}\t{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
