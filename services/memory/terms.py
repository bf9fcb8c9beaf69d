"""The word lists memory's rule extractor recognises, as validated data rather than code.

They live in `data/extraction_terms.yaml` (or a file named by `CBD_MEMORY_EXTRACTION_TERMS_PATH`)
so that the people who know a tenant's customers can extend them without touching a regular
expression; the file is validated at start-up and a bad edit stops the service with the reason,
instead of silently learning nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

DEFAULT_TERMS_PATH = Path(__file__).parent / "data" / "extraction_terms.yaml"

# A term is a few plain words: letters, spaces, hyphens and apostrophes. Anything else (regex
# syntax above all) is refused, because terms are escaped into patterns and must stay literal.
Term = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        min_length=1,
        max_length=40,
        pattern=r"^[a-z][a-z' -]*[a-z]$|^[a-z]$",
    ),
]
TermList = Annotated[list[Term], Field(min_length=1)]


class ExtractionTerms(BaseModel):
    """Every word list the rule extractor uses; unknown keys and non-strings are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    languages: TermList
    not_names: TermList
    occupations: TermList
    diets: TermList
    access_needs: TermList
    assistive_devices: TermList
    relations: TermList
    household: TermList
    contact_channels: dict[Term, Annotated[str, StringConstraints(min_length=1, max_length=40)]]
    issue_examples: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{1,39}$")],
        Annotated[
            list[Annotated[str, StringConstraints(min_length=3, max_length=200)]],
            Field(min_length=1),
        ],
    ]

    @field_validator("contact_channels", "issue_examples")
    @classmethod
    def _not_empty(cls, value: dict[str, object]) -> dict[str, object]:
        if not value:
            raise ValueError("must not be empty")
        return value


def load_terms(path: Path = DEFAULT_TERMS_PATH) -> ExtractionTerms:
    """Read and validate a terms file; ValueError (with every problem) when it is invalid."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of term lists")
    return ExtractionTerms.model_validate(data)
