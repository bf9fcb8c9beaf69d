"""Chat and social text made plain before anything else reads it.

Messages from chat widgets and social channels carry @handles, #hashtags, links and emoji. The
words the lexicon, the model and the language check know are underneath: links and handles say
nothing about feeling and are removed, hashtags become the words they join ("#WorstServiceEver"
-> "Worst Service Ever"), and emoji and emoticons become the emotion words they stand for
(`data/emoji.yaml`, validated at load: "😡" -> "furious", ":(" -> "sad"). Every pattern is RE2
(`shared.linear_re`) and every pass is linear in the message, whatever a customer sends.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator

from shared.linear_re import compile_linear

DEFAULT_EMOJI_PATH = Path(__file__).parent / "data" / "emoji.yaml"

EvidenceWords = Annotated[str, StringConstraints(pattern=r"^[a-z]+(?: [a-z]+){0,2}$")]

_URL = compile_linear(r"(?:https?://|www\.)\S+", ignore_case=True)
# A handle starts a word: "ann@example.com" is an address, not a mention.
_HANDLE = compile_linear(r"(?:^|\s)@\w{1,30}")
_HASHTAG = compile_linear(r"(?:^|\s)#([A-Za-z][A-Za-z0-9_]{0,60})")
_SPACES = compile_linear(r"[ \t]{2,}")
# Ignored when looking an emoji up: variation selectors, zero-width joiner, skin tones.
_EMOJI_MODIFIERS = frozenset({"\ufe0e", "\ufe0f", "\u200d", *map(chr, range(0x1F3FB, 0x1F400))})
_TRAILING = ".,!?;"


class EmojiMap(BaseModel):
    """The emoji file: emoji and emoticons, each with the emotion words it stands for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    emoji: dict[str, EvidenceWords]
    emoticons: dict[str, EvidenceWords]

    @field_validator("emoji")
    @classmethod
    def _are_emoji(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if len(key) != 1 or unicodedata.category(key) not in {"So", "Sm"}:
                raise ValueError(f"{key!r} is not a single emoji character")
        return value

    @field_validator("emoticons")
    @classmethod
    def _are_emoticons(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not 2 <= len(key) <= 4 or any(c.isspace() for c in key):
                raise ValueError(f"{key!r} is not an emoticon (2-4 characters, no spaces)")
            if sum(c.isalnum() for c in key) > 1 or all(c.isalnum() for c in key):
                raise ValueError(f"{key!r} is mostly letters or digits: a word, not a face")
        return value


def load_emoji(path: Path = DEFAULT_EMOJI_PATH) -> EmojiMap:
    """Read and validate an emoji file; ValueError naming the file when it is unusable."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with `emoji` and `emoticons`")
    return EmojiMap.model_validate(data)


@dataclass(frozen=True)
class Normalized:
    """A message made plain, and the faces that became words (for explanations)."""

    text: str
    faces: tuple[str, ...] = field(default=())


class Normalizer:
    """Removes links and handles, unpacks hashtags, turns emoji into words; build once."""

    def __init__(self, emoji: EmojiMap | None = None) -> None:
        """Load the emoji map (the shipped file by default)."""
        mapping = emoji or load_emoji()
        self._emoji = dict(mapping.emoji)
        self._emoticons = dict(mapping.emoticons)
        # Emoticons glued to a word ("thanks:)") are found at a token's end, longest first.
        self._suffixes = sorted(
            (e for e in self._emoticons if not e[0].isalnum()), key=len, reverse=True
        )

    def normalize(self, text: str) -> Normalized:
        """The message with links, handles, hashtags, emoji and emoticons made plain."""
        faces: list[str] = []
        text = _URL.sub(" ", text)
        text = _HANDLE.sub(" ", text)
        text = _HASHTAG.sub(lambda m: " " + _split_tag(m.group(1)), text)
        text = self._words_for_emoji(text, faces)
        text = self._words_for_emoticons(text, faces)
        lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
        return Normalized(text="\n".join(line for line in lines if line), faces=tuple(faces))

    def _words_for_emoji(self, text: str, faces: list[str]) -> str:
        out: list[str] = []
        for char in text:
            if char in _EMOJI_MODIFIERS:
                continue
            words = self._emoji.get(char)
            if words is not None:
                faces.append(char)
                out.append(f" {words} ")
            elif _is_pictograph(char):
                out.append(" ")
            else:
                out.append(char)
        return "".join(out)

    def _words_for_emoticons(self, text: str, faces: list[str]) -> str:
        if not any(c in text for c in ":;=<>-_"):
            return text
        tokens = text.split(" ")
        for i, token in enumerate(tokens):
            bare = token.rstrip(_TRAILING) or token
            words = self._emoticons.get(bare)
            if words is not None:
                faces.append(bare)
                tokens[i] = words
                continue
            for face in self._suffixes:
                if (
                    token.endswith(face)
                    and len(token) > len(face)
                    and token[-len(face) - 1].isalpha()
                ):
                    faces.append(face)
                    tokens[i] = token[: -len(face)] + " " + self._emoticons[face]
                    break
        return " ".join(tokens)


def _split_tag(tag: str) -> str:
    """ "WorstServiceEver" -> "Worst Service Ever", "still_waiting" -> "still waiting"."""
    words: list[str] = []
    current = ""
    for i, char in enumerate(tag):
        if char == "_":
            if current:
                words.append(current)
            current = ""
            continue
        boundary = (
            current
            and char.isupper()
            and (current[-1].islower() or (i + 1 < len(tag) and tag[i + 1].islower()))
        )
        if boundary or (current and char.isdigit() != current[-1].isdigit()):
            words.append(current)
            current = ""
        current += char
    if current:
        words.append(current)
    return " ".join(words)


def _is_pictograph(char: str) -> bool:
    """Emoji and pictographs that carry no mapped feeling (📦, 🚚): dropped, not read as text."""
    code = ord(char)
    return (
        0x1F000 <= code <= 0x1FAFF
        or 0x2600 <= code <= 0x27BF
        or 0x2B00 <= code <= 0x2BFF
        or (unicodedata.category(char) == "So" and code > 0x2000)
    )
