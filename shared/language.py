"""Which language a text is in, offline: py3langid's bundled model, for whoever needs it.

`py3langid` is the maintained fork of langid.py: a small model shipped inside the package,
deterministic, no download. Generation's voice check uses it to catch a reply in another
language than the customer's; emotion uses it to refuse only text that really is not English.
Only text long enough to identify is judged: a short sentence, a name or "OK" never is.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Protocol

from py3langid import langid

MIN_LANGUAGE_LETTERS = 24
"""Fewer letters than this and the language is not judged: too short to identify."""
MIN_LANGUAGE_WORDS = 4
MIN_LANGUAGE_CONFIDENCE = 0.6
"""py3langid's normalised probability a text must reach before its language counts. At 0.6
(and at 0.5) none of Banking77's English test messages long enough to judge is taken for
another language, while an English prompt header leaked into a Portuguese reply (0.68) is
caught; the probabilities are tempered by text length, so 0.9 missed it."""
_LETTERS = re.compile(r"[^\W\d_]")


class LanguageIdentifier(Protocol):
    """Names a text's language (ISO 639-1) with a confidence; the check needs nothing else."""

    def identify(self, text: str) -> tuple[str, float]:
        """(language code, probability 0-1)."""
        ...


class LangId:
    """py3langid's bundled model, normalised to probabilities."""

    def __init__(self) -> None:
        self._model = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)

    def identify(self, text: str) -> tuple[str, float]:
        """(language code, probability 0-1)."""
        lang, prob = self._model.classify(text)
        return str(lang), float(prob)


@lru_cache(maxsize=1)
def default_identifier() -> LangId:
    """One identifier per process: its model takes a moment to unpack."""
    return LangId()


def identifiable(text: str) -> bool:
    """Whether a text is long enough for its language to be judged."""
    return len(_LETTERS.findall(text)) >= MIN_LANGUAGE_LETTERS and (
        len(text.split()) >= MIN_LANGUAGE_WORDS
    )


def language_of(text: str, identifier: LanguageIdentifier) -> str | None:
    """The text's language when it is long enough and the identifier is confident."""
    if not identifiable(text):
        return None
    lang, prob = identifier.identify(text)
    return lang if prob >= MIN_LANGUAGE_CONFIDENCE else None
