"""Replies reshaped for channels that are not a web page: plain text, pieces, speech."""

from __future__ import annotations

from shared.linear_re import LinearMatch, compile_linear, escape

SMS_LIMIT = 1600
"""Twilio's longest message body; the carrier splits it into segments itself."""
WHATSAPP_LIMIT = 4096

# Every pattern here runs on reply text (the model's or an agent's, which can quote the
# customer), so each is RE2 and linear in the text: Python's `re` backtracked quadratically
# on `"*a " * 1333` with the back-referenced emphasis pattern this replaced. RE2 has no
# look-around and no back-references, hence one alternative per delimiter and sentence ends
# matched with their punctuation. `_WS` is the whitespace Python's `\s` knows (RE2's `\s` is
# ASCII only).
_WS = r"\s\p{Z}\x{0b}\x{1c}-\x{1f}\x{85}"
_LINK = compile_linear(r"\[([^\]]+)\]\((https?://[^)" + _WS + r"]+)\)")
_URL = compile_linear(r"https?://([^/" + _WS + r")]+)(?:[^" + _WS + r")]*[^" + _WS + r").,!?;:])?")
# Emphasis: the delimiter, text that starts and ends with a non-space and holds neither the
# delimiter's character nor a line break, then the delimiter again. RE2 is linear per search,
# but a search that must rule out an earlier, preferred match reads ahead until that match
# fails: text that could hold its own delimiter made each search read to the end of the line
# (quadratic over a reply of thousands of `**a `). Without the delimiter inside, a try ends at
# the next delimiter, so the whole reply is read a bounded number of times. `**` and `__` come
# before `*` and `_`, as in the back-referenced pattern this replaced.
_EMPHASIS = compile_linear(
    "|".join(
        rf"{escape(d)}([^{c}{_WS}](?:[^{c}\n]*[^{c}{_WS}])?){escape(d)}"
        for d, c in (("**", r"\*"), ("__", "_"), ("*", r"\*"), ("_", "_"), ("~~", "~"), ("`", "`"))
    )
)
_HEADING = compile_linear(r"(?m)^[ \t]{0,3}#{1,6}[ \t]*")
_BULLET = compile_linear(r"(?m)^[ \t]*[-*+][ \t]+")
_QUOTE = compile_linear(r"(?m)^[ \t]*>[ \t]?")
_FENCE = compile_linear(r"```[a-zA-Z0-9]*\n?")
_SENTENCE_END = compile_linear(r"[.!?][" + _WS + r"]+")
_BLANK_LINES = compile_linear(r"\n{3,}")
# A double delimiter left over once pairs are gone: a reply cut at its token limit ends on
# "1. **", and a phone shows the asterisks. A single `*` or `_` stays (arithmetic, names).
_LEFTOVER = compile_linear(r"\*\*+|__+|~~+")
_MARKUP = str.maketrans(dict.fromkeys("#*_`>|~", " "))


def _emphasised(match: LinearMatch) -> str:
    # Exactly one alternative took part: its group holds the text between the delimiters.
    return next(g for g in (match.group(i) for i in range(1, 7)) if g is not None)


def plain_text(text: str) -> str:
    """Markdown taken out (SMS and WhatsApp would show the asterisks), links kept as URLs."""
    text = _FENCE.sub("", text)
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("- ", text)
    text = _QUOTE.sub("", text)
    for _ in range(2):
        text = _EMPHASIS.sub(_emphasised, text)
    text = _LEFTOVER.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


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
    text = text.translate(_MARKUP)
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    window = text[:max_chars]
    # Just after each sentence's punctuation.
    ends = [m.start() + 1 for m in _SENTENCE_END.finditer(window + " ")]
    cut = ends[-1] if ends and ends[-1] > max_chars // 3 else window.rfind(" ")
    return text[: max(cut, 1)].strip()
