"""Regular expressions whose running time is linear in the text, for text customers write.

Python's `re` backtracks: a pattern such as `\\s+(?:x)?\\s*` spends quadratic time on a run of
spaces ("don't" and 4,000 spaces cost 1.7 s in memory's extraction before this module), and
customer text is chosen by whoever sends it. RE2 (Google's `google-re2` package) compiles a
pattern to an automaton and runs in time linear in the input whatever the pattern, so no input
can make a rule slow. The price is RE2's syntax: no look-around and no back-references (a
pattern using them fails at import, not at run time), and `\\b`, `\\w` and `\\d` are ASCII.

This module gives RE2 the small, typed surface the services use (`search`, `finditer`,
`fullmatch`, `sub`, `split`), with named groups accepted everywhere `re` accepts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import re2  # type: ignore[import-untyped]

_OPTIONS = re2.Options()
# A bad pattern is reported by the exception we raise; RE2's own logger would print to stderr.
_OPTIONS.log_errors = False


class LinearMatch:
    """One match: groups by index or name, their spans, like `re.Match`."""

    __slots__ = ("_match", "_names")

    def __init__(self, match: object, names: dict[str, int]) -> None:
        self._match = match
        self._names = names

    def _index(self, group: int | str) -> int:
        return self._names[group] if isinstance(group, str) else group

    # `str | Any` like typeshed's `re.Match.group`: None when the group took no part, which
    # the rules know from the pattern's shape.
    def group(self, group: int | str = 0) -> str | Any:
        """The text a group matched, or None when it took no part in the match."""
        return self._match.group(self._index(group))  # type: ignore[attr-defined]

    def __getitem__(self, group: int | str) -> str | Any:
        return self.group(group)

    def start(self, group: int | str = 0) -> int:
        """Where a group starts in the text (-1 when it did not take part)."""
        return int(self._match.start(self._index(group)))  # type: ignore[attr-defined]

    def end(self, group: int | str = 0) -> int:
        """Where a group ends in the text (-1 when it did not take part)."""
        return int(self._match.end(self._index(group)))  # type: ignore[attr-defined]

    def span(self, group: int | str = 0) -> tuple[int, int]:
        """(start, end) of a group."""
        return self.start(group), self.end(group)


class LinearPattern:
    """A compiled RE2 pattern with the parts of the `re.Pattern` interface the services use."""

    __slots__ = ("_names", "_regexp", "pattern", "source")

    def __init__(self, pattern: str, *, ignore_case: bool = False) -> None:
        self.pattern = pattern
        self.source = f"(?i){pattern}" if ignore_case else pattern
        try:
            self._regexp = re2.compile(self.source, _OPTIONS)
        except re2.error as exc:
            raise ValueError(f"not a linear-time (RE2) pattern: {pattern!r}: {exc}") from exc
        self._names: dict[str, int] = dict(self._regexp.groupindex)

    def _wrap(self, match: object | None) -> LinearMatch | None:
        return None if match is None else LinearMatch(match, self._names)

    def search(self, text: str, pos: int = 0) -> LinearMatch | None:
        """The first match at or after `pos` (`\\b` still sees the character before `pos`)."""
        return self._wrap(self._regexp.search(text, pos))

    def fullmatch(self, text: str) -> LinearMatch | None:
        """A match of the whole text, or None."""
        return self._wrap(self._regexp.fullmatch(text))

    def finditer(self, text: str) -> Iterator[LinearMatch]:
        """Every non-overlapping match, left to right."""
        for match in self._regexp.finditer(text):
            yield LinearMatch(match, self._names)

    def sub(self, repl: str | Callable[[LinearMatch], str], text: str) -> str:
        """The text with every match replaced (a literal string, or what `repl(match)` says)."""
        parts: list[str] = []
        last = 0
        for match in self.finditer(text):
            start, end = match.span()
            parts.append(text[last:start])
            parts.append(repl(match) if callable(repl) else repl)
            last = end
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)

    def split(self, text: str) -> list[str]:
        """The pieces between matches (separators dropped, unlike `re.split` with groups)."""
        pieces: list[str] = []
        last = 0
        for match in self.finditer(text):
            start, end = match.span()
            if end == start:
                continue
            pieces.append(text[last:start])
            last = end
        pieces.append(text[last:])
        return pieces


class PatternSet:
    """Which of many patterns occur in a text, in one linear pass (RE2::Set).

    Calling RE2 from Python costs a few microseconds however short the text, so a text cut
    into many short pieces (sentences) is first asked which patterns can match at all, and
    only those are run for their groups.
    """

    def __init__(self, patterns: Iterable[LinearPattern]) -> None:
        self._patterns = list(dict.fromkeys(patterns))
        self._set = re2.Set.SearchSet(_OPTIONS)
        for pattern in self._patterns:
            self._set.Add(pattern.source)
        self._set.Compile()

    def matching(self, text: str) -> frozenset[LinearPattern]:
        """The patterns that match somewhere in `text`."""
        found = self._set.Match(text) or ()
        return frozenset(self._patterns[i] for i in found)


def compile_linear(pattern: str, *, ignore_case: bool = False) -> LinearPattern:
    """Compile a pattern for RE2; ValueError when it needs backtracking (look-around, ...)."""
    return LinearPattern(pattern, ignore_case=ignore_case)


def escape(text: str) -> str:
    """`text` as a pattern matching itself literally."""
    escaped: str = re2.escape(text)
    return escaped
