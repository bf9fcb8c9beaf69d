"""`cbd evaluate issues`: memory's issue extraction scored per set (own, Banking77, CLINC150).

The same table as `python -m services.memory.issue_evaluation`; see
services/memory/data/ISSUES_DATASHEET.md for the sets and the figures.
"""

from __future__ import annotations

import argparse

SPLITS = ["test", "heldout", "dev", "train", "all"]
SETS = ["table", "own", "banking77", "clinc150", "public"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `issues` under `cbd evaluate`."""
    p_issues = sub.add_parser(
        "issues", help="issue extraction per set: own, banking77, clinc150, public (datasheet)"
    )
    p_issues.add_argument("--split", default="test", choices=SPLITS)
    p_issues.add_argument(
        "--set", default="table", choices=SETS, help="'table' scores every set; a name its misses"
    )


def main(args: argparse.Namespace) -> int:
    """Print the table (or one set's figures and misses) for the chosen split."""
    # Imported here: it loads the embedding model and scikit-learn, which no other command needs.
    from services.memory import issue_evaluation  # noqa: PLC0415

    issue_evaluation.main(["--split", args.split, "--set", args.set])
    return 0
