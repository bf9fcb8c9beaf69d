"""The unpacked language-model cache gives py3langid's own answers and survives damage."""

from __future__ import annotations

from pathlib import Path

import pytest
from py3langid import langid

from services.emotion import dataset
from shared.language import LangId

TEXTS = [
    "Where is my parcel? I ordered it two weeks ago and nothing has arrived.",
    "Onde está a minha encomenda? Já faz duas semanas que a pedi.",
    "Wo ist mein Paket? Ich habe es vor zwei Wochen bestellt.",
    "¿Dónde está mi pedido? Lo pedí hace dos semanas.",
    "Это тест, где мой заказ?",
    "我的包裹在哪里",
    "",
    "ok",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return TEXTS + [ex.text for ex in dataset.load("test")]


def test_the_cached_model_answers_as_py3langid_does(tmp_path: Path, texts: list[str]) -> None:
    reference = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
    expected = [reference.classify(t) for t in texts]
    first = LangId(tmp_path)  # unpacks and writes the cache
    assert [first.identify(t) for t in texts] == expected
    (folder,) = tmp_path.iterdir()
    again = LangId(tmp_path)  # reads it
    assert [again.identify(t) for t in texts] == expected
    # A damaged cache is not used: the model is unpacked again and the cache rewritten.
    damaged = folder / "ptc.npy"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert [LangId(tmp_path).identify(t) for t in texts[:8]] == expected[:8]
    assert damaged.read_bytes() != bytes(data)


def test_an_unwritable_cache_is_not_needed(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    assert LangId(blocked / "cache").identify(TEXTS[1])[0] == "pt"
