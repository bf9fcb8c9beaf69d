"""Replies reshaped for channels that are not a web page: plain text, pieces, speech."""

from __future__ import annotations

import re

SMS_LIMIT = 1600
"""Twilio's longest message body; the carrier splits it into segments itself."""
WHATSAPP_LIMIT = 4096

_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_URL = re.compile(r"https?://([^/\s)]+)(?:[^\s)]*[^\s).,!?;:])?")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]*", re.M)
_BULLET = re.compile(r"^[ \t]*[-*+][ \t]+", re.M)
_QUOTE = re.compile(r"^[ \t]*>[ \t]?", re.M)
_FENCE = re.compile(r"```[a-zA-Z0-9]*\n?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def plain_text(text: str) -> str:
    """Markdown taken out (SMS and WhatsApp would show the asterisks), links kept as URLs."""
    text = _FENCE.sub("", text)
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("- ", text)
    text = _QUOTE.sub("", text)
    for _ in range(2):
        text = _EMPHASIS.sub(r"\2", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def split_message(text: str, limit: int) -> list[str]:
    """Pieces no longer than `limit`, cut at paragraph, then sentence, then word ends."""
    text = text.strip()
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max(window.rfind("\n\n"), -1)
        if cut < limit // 2:
            ends = [m.end() for m in _SENTENCE_END.finditer(window)]
            cut = ends[-1] if ends and ends[-1] >= limit // 2 else -1
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces


def speakable(text: str, max_chars: int) -> str:
    """Text a speech engine reads well: no markdown, no URLs spelled out, short.

    A URL becomes "the <site> website"; the reply is cut at the last sentence end that fits,
    so the caller hears whole sentences and can speak again sooner.
    """
    text = _LINK.sub(lambda m: m.group(1), plain_text(text))
    text = _URL.sub(lambda m: f"the {m.group(1).removeprefix('www.')} website", text)
    text = re.sub(r"[#*_`>|~]", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= max_chars:
        return text
    window = text[:max_chars]
    ends = [m.start() for m in _SENTENCE_END.finditer(window + " ")]
    cut = ends[-1] if ends and ends[-1] > max_chars // 3 else window.rfind(" ")
    return text[: max(cut, 1)].strip()
