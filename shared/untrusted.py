"""Untrusted text (what customers write, and what was learned from it) made safe to quote.

Prompt injection hides in characters a person does not see and a model still reads: zero-width
spaces inside a tag (U+200B in `</cus tomer>`), bidi controls that reorder what a reviewer
sees, full-width or look-alike brackets (U+FF1C, U+2039) and Cyrillic letters that look Latin
(U+0441 for "c"). `normalize` folds the text to one visible form first (NFKC, format and
control characters removed, look-alike brackets and slashes mapped to ASCII), so that a fence
check downstream sees what the model will see; `neutralize_tags` then turns every spelling of
the fence tags into harmless brackets.
"""

from __future__ import annotations

import unicodedata

from shared.linear_re import compile_linear

# Characters that look like `<`, `>` or `/` and that NFKC leaves alone.
_LOOKALIKES = str.maketrans(
    {
        **dict.fromkeys("\u2039\u2329\u27e8\u276e\u02c2\u1438\u3008\u276c\u29fc", "<"),
        **dict.fromkeys("\u203a\u232a\u27e9\u276f\u02c3\u1433\u3009\u276d\u29fd", ">"),
        **dict.fromkeys("\u2215\u2044\u2571\u29f8\u27cb", "/"),
    }
)
# Letters from other scripts that look like the Latin letters of our tag names; used only to
# compare a tag's skeleton, never to rewrite what the customer wrote.
_SKELETON = str.maketrans(
    {
        "\u0441": "c", "\u03f2": "c", "\u0455": "s", "\u043e": "o", "\u03bf": "o",
        "\u0585": "o", "\u0435": "e", "\u04bd": "e", "\u0433": "r", "\u0443": "y",
        "\u04af": "y", "\u03c5": "u", "\u057d": "u", "\u0442": "t", "\u03c4": "t",
        "\u043c": "m", "\u0440": "p", "\u0456": "i", "\u0430": "a",
    }
)  # fmt: skip
_KEEP_CONTROLS = frozenset("\n\t")
_TAG_SPAN = 48
"""How far after a `<` a tag's letters are looked for."""


def normalize(text: str) -> str:
    """NFKC, without format (Cf) or control characters, look-alike brackets made ASCII."""
    folded = unicodedata.normalize("NFKC", text).translate(_LOOKALIKES)
    return "".join(
        ch
        for ch in folded
        if ch in _KEEP_CONTROLS or unicodedata.category(ch) not in {"Cf", "Cc", "Co", "Cs"}
    )


def skeleton(text: str) -> str:
    """The Latin letters a text reads as, lower-case, without spaces or punctuation."""
    mapped = text.casefold().translate(_SKELETON)
    return "".join(ch for ch in mapped if "a" <= ch <= "z")


def neutralize_tags(text: str, tags: tuple[str, ...]) -> str:
    """Every `<tag>` or `</tag>` spelling in (normalised) text becomes `[tag]` / `[/tag]`.

    A spelling is anything between `<` and `>` whose letters read as the tag (spaces, slashes,
    punctuation and look-alike letters included), or an unclosed `<` that starts with it. A
    scan with `str.find` rather than a pattern: one pass, and no per-match cost from Python
    when a text is thousands of `<`.
    """
    out: list[str] = []
    pos = 0
    while (start := text.find("<", pos)) >= 0:
        end = start + 1
        limit = min(len(text), start + 1 + _TAG_SPAN)
        while end < limit and text[end] not in "<>\n":
            end += 1
        closed = end < len(text) and text[end] == ">"
        replacement = _as_tag(text[start + 1 : end], closed, tags)
        if replacement is None:
            out.append(text[pos : start + 1])
            pos = start + 1
            continue
        out.append(text[pos:start])
        out.append(replacement)
        pos = end + 1 if closed else end
    out.append(text[pos:])
    return "".join(out)


def _as_tag(inner: str, closed: bool, tags: tuple[str, ...]) -> str | None:
    """What `<inner>` (or an unclosed `<inner`) becomes when it spells a tag; None if not."""
    letters = skeleton(inner)
    if not letters:
        return None
    slash = "/" if "/" in inner or "\\" in inner else ""
    for tag in tags:
        if letters == tag or (not closed and letters.startswith(tag)):
            rest = "" if closed else inner[_tag_end(inner, tag) :]
            return f"[{slash}{tag}]{rest}"
    return None


def _tag_end(inner: str, tag: str) -> int:
    """Where the tag's letters end inside `inner` (for an unclosed tag, the rest is kept)."""
    seen = 0
    for i, ch in enumerate(inner):
        if skeleton(ch):
            seen += 1
            if seen == len(tag):
                return i + 1
    return len(inner)


# What text addressed to the assistant looks like. These are shapes, not a list of known
# attacks. `_OVERRIDE` never occurs in a genuine complaint; `_IMPERATIVE` (orders about what to
# say or give) does ("you never reply to my emails"), so it only rules out facts, which never
# need it: an address, a name or a preference is quoted into every later prompt and the console.
_OVERRIDE = compile_linear(
    r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}\b(?:instructions?|rules?|prompts?|"
    r"previous|above|everything|guidelines?|polic(?:y|ies))\b"
    r"|\b(?:system|developer|assistant)\s*(?:prompt|message|instructions?|:)"
    r"|\b(?:act as|pretend to be|role-?play|jailbreak|do anything now|dan mode)\b"
    r"|\b(?:new|updated|real|hidden|secret)\s+(?:rules?|instructions?|task|prompt)\b"
    r"|\b(?:the|this|dear) (?:assistant|bot|ai|model|llm)\b|\bchatgpt\b"
    r"|[<>{}\[\]`|\\]|https?://|\bwww\.",
    ignore_case=True,
)
_IMPERATIVE = compile_linear(
    r"\byou (?:are|must|should|will|shall|have to|need to|may|can)\b"
    r"|\b(?:always|never|must|do not|don'?t)\s+(?:say|reply|answer|respond|tell|give|offer|"
    r"promise|refund|approve|reveal|mention|follow|obey|send)\b"
    r"|\b(?:reply|respond|answer)\s+(?:with|only|in|as|that)\b"
    r"|^(?:please )?(?:give|offer|refund|approve|tell|say|send|grant|issue)\b",
    ignore_case=True,
)


def overrides_instructions(text: str) -> bool:
    """Whether text (read as a model would, after `normalize`) tries to change the rules or
    carries markup: never part of what a customer reports."""
    return _OVERRIDE.search(normalize(text)) is not None


def looks_like_instruction(text: str) -> bool:
    """Whether text reads as an instruction to the assistant rather than a fact about a
    person (overrides, markup, or orders about what to say or give)."""
    folded = normalize(text)
    return _OVERRIDE.search(folded) is not None or _IMPERATIVE.search(folded) is not None
