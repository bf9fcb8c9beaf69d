"""Memory's word lists are data: the shipped file loads, a bad edit is refused with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.memory.extraction import RuleExtractor
from services.memory.terms import DEFAULT_TERMS_PATH, ExtractionTerms, load_terms


def _write(tmp_path: Path, change: dict[str, object]) -> Path:
    data = yaml.safe_load(DEFAULT_TERMS_PATH.read_text(encoding="utf-8"))
    data.update(change)
    path = tmp_path / "terms.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_shipped_terms_load() -> None:
    terms = load_terms()
    assert "spanish" in terms.languages
    assert terms.contact_channels["whatsapp"] == "WhatsApp"
    assert set(terms.issue_examples) >= {"refund", "fraud", "delivery_lost"}


def test_an_added_term_is_learned(tmp_path: Path) -> None:
    terms = load_terms(_write(tmp_path, {"languages": [*load_terms().languages, "esperanto"]}))
    learned = RuleExtractor(terms=terms).extract("I only speak Esperanto").memories
    assert [m.text for m in learned] == ["Prefers Esperanto"]
    assert RuleExtractor().extract("I only speak Esperanto").memories == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"languages": ["english", "(?:x)+"]}, "String should match pattern"),
        ({"languages": []}, "at least 1 item"),
        ({"not_names": ["back", True]}, "Input should be a valid string"),
        ({"surprise": ["x"]}, "Extra inputs are not permitted"),
        ({"contact_channels": {}}, "must not be empty"),
        ({"issue_examples": {"Refund!": ["I want my money back"]}}, "String should match"),
    ],
)
def test_a_bad_file_is_refused_with_the_reason(
    tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        load_terms(_write(tmp_path, change))


def test_yaml_booleans_do_not_become_terms(tmp_path: Path) -> None:
    """YAML 1.1 reads a bare `on` as true; strict validation refuses it instead of learning it."""
    path = tmp_path / "terms.yaml"
    text = DEFAULT_TERMS_PATH.read_text(encoding="utf-8").replace('"on"', "on")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError, match="valid string"):
        load_terms(path)


def test_the_model_refuses_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        ExtractionTerms.model_validate({"languages": ["english"]})
