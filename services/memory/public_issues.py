"""Public customer-service text we did not write, mapped onto "is this message an issue".

The project's own labelled set (`data/issues.jsonl`) was written by the same hand as the rules.
This module builds a second set from public corpora with their own labels and splits: Banking77
(PolyAI, CC-BY-4.0) and the customer-service domains of CLINC150 (Clinc, CC-BY-3.0). Each
intent maps to an issue category, to no issue, or to "mixed" (left out) by
`data/public_issue_mapping.yaml`; see data/ISSUES_DATASHEET.md for the label guide and counts.

`python -m services.memory.public_issues build --banking77 DIR --clinc DIR` writes
`data/public_issues.jsonl` from checkouts of the two repositories (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from services.memory.issue_model import PUBLIC_SET, IssueCase, read_cases

DATA = Path(__file__).parent / "data"
MAPPING_FILE = DATA / "public_issue_mapping.yaml"
SOURCES = ("banking77", "clinc150")
CLINC_DOMAINS = ("banking", "credit_cards", "travel", "kitchen_and_dining")
DEV_EVERY = 5
"""Banking77 has no dev split: every 5th train example of each intent (in file order) is dev."""

Row = dict[str, str | None]


def load_mapping(path: Path = MAPPING_FILE) -> dict[str, dict[str, str]]:
    """Per source, each intent's category, `none` or `mixed`."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {source: {str(k): str(v) for k, v in raw[source].items()} for source in SOURCES}


def _mapped(
    source: str, split: str, examples: Iterable[tuple[str, str]], mapping: dict[str, str]
) -> list[Row]:
    rows: list[Row] = []
    for text, intent in examples:
        if intent not in mapping:
            raise ValueError(f"{source} intent {intent!r} is not in {MAPPING_FILE.name}")
        label = mapping[intent]
        if label == "mixed":
            continue
        rows.append(
            {
                "source": source,
                "split": split,
                "text": " ".join(text.split()),
                "category": None if label == "none" else label,
                "intent": intent,
            }
        )
    return rows


def _with_dev(rows: list[Row]) -> list[Row]:
    seen: Counter[str | None] = Counter()
    for row in rows:
        seen[row["intent"]] += 1
        if seen[row["intent"]] % DEV_EVERY == 0:
            row["split"] = "dev"
    return rows


def banking77(checkout: Path, mapping: dict[str, str]) -> list[Row]:
    """Banking77's train (split into train and dev) and test, mapped."""

    def read(name: str) -> list[tuple[str, str]]:
        with (checkout / "banking_data" / name).open(encoding="utf-8", newline="") as f:
            return [(r["text"], r["category"]) for r in csv.DictReader(f)]

    train = _with_dev(_mapped("banking77", "train", read("train.csv"), mapping))
    return train + _mapped("banking77", "test", read("test.csv"), mapping)


def clinc150(checkout: Path, mapping: dict[str, str]) -> list[Row]:
    """CLINC150's train, val (as dev) and test for the customer-service domains, mapped."""
    data = json.loads((checkout / "data" / "data_full.json").read_text(encoding="utf-8"))
    domains = json.loads((checkout / "data" / "domains.json").read_text(encoding="utf-8"))
    wanted = {intent for d in CLINC_DOMAINS for intent in domains[d]}
    rows: list[Row] = []
    for part, split in (("train", "train"), ("val", "dev"), ("test", "test")):
        examples = [(text, intent) for text, intent in data[part] if intent in wanted]
        rows += _mapped("clinc150", split, examples, mapping)
    return rows


def build(banking77_dir: Path, clinc_dir: Path, out: Path = PUBLIC_SET) -> Counter[str]:
    """Write the mapped set; a text found in a test split is dropped from train and dev."""
    mapping = load_mapping()
    rows = banking77(banking77_dir, mapping["banking77"]) + clinc150(clinc_dir, mapping["clinc150"])
    test_texts = {str(r["text"]).lower() for r in rows if r["split"] == "test"}
    rows = [r for r in rows if r["split"] == "test" or str(r["text"]).lower() not in test_texts]
    counts: Counter[str] = Counter()
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            source, split = str(row["source"]), str(row["split"])
            counts[f"{source} {split}"] += 1
            counts[f"{source} {split} issues"] += row["category"] is not None
            row_id = f"{source}-{split}-{counts[f'{source} {split}']:05d}"
            f.write(json.dumps({"id": row_id, **row}, ensure_ascii=False) + "\n")
    return counts


def load_public_cases(
    split: str | None = None, source: str | None = None, path: Path = PUBLIC_SET
) -> list[IssueCase]:
    """The mapped public cases, optionally one split and one source only."""
    return read_cases(path, split, source)


def main(argv: Sequence[str] | None = None) -> None:
    """Build the mapped set from checkouts of the two repositories and print its counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="write data/public_issues.jsonl")
    p_build.add_argument(
        "--banking77", type=Path, required=True, help="PolyAI-LDN/task-specific-datasets"
    )
    p_build.add_argument("--clinc", type=Path, required=True, help="clinc/oos-eval")
    args = parser.parse_args(argv)
    for key, count in sorted(build(args.banking77, args.clinc).items()):
        print(f"{key:<28} {count}")


if __name__ == "__main__":
    main()
