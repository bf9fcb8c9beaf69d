"""The emotion lexicon is data (services/emotion/data/lexicon.yaml), validated when it loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.emotion.lexicon import LEXICON_PATH, LexiconAnalyzer, load_lexicon
from shared.events import SIGNAL_NAMES, EmotionLabel


def shipped() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LEXICON_PATH.read_text(encoding="utf-8"))
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "lexicon.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_shipped_file_loads_and_names_only_known_labels_and_signals() -> None:
    lexicon = load_lexicon()
    assert set(lexicon.lexicons) <= set(EmotionLabel)
    assert set(lexicon.signals) <= set(SIGNAL_NAMES)
    assert lexicon.lexicons[EmotionLabel.FRUSTRATION]["third time"] > 0
    # What the file says is what the analyzer reads.
    found = LexiconAnalyzer().analyze("I want to speak to a real person, this is ridiculous")
    assert {s.name for s in found.signals} == {"human_request"}


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d["lexicons"].update({"grumpy": {"meh": 1.0}}), "grumpy"),
        (lambda d: d["lexicons"]["anger"].update({"livid": 9.0}), "less than or equal to 3"),
        (lambda d: d["signals"].update({"telepathy": {"strong": ["x"]}}), "telepathy"),
        (lambda d: d["signals"]["urgency"].update({"strong": ["(unclosed"]}), "does not compile"),
        (lambda d: d["signal_boosts"].update({"shouting": {"label": "glee", "weight": 1}}), "glee"),
        (lambda d: d.update({"surprise": []}), "surprise"),
    ],
)
def test_a_bad_edit_is_refused_with_its_reason(tmp_path: Path, edit: Any, reason: str) -> None:
    data = shipped()
    edit(data)
    with pytest.raises(ValidationError, match=reason):
        load_lexicon(write(tmp_path, data))
