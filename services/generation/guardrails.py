"""Guardrails on the way out: what a reply may never say, checked while it streams.

Three checks, on every bot reply and every suggestion drafted for an agent:

- **Prompt leakage.** The system prompt carries a secret canary; a reply containing it (in any
  case or spacing), eight words in a row of the prompt's principles, rules and strategies, or
  the per-turn section's headers ("Strategy:", "Knowledge (the only facts...)", entry ids), is
  a leak.
  The reply stops streaming and is regenerated or replaced (see handlers).
- **Sensitive numbers.** Luhn-valid 13-19 digit runs (payment cards, with spaces or hyphens),
  US social security numbers, IBANs (mod-97 valid) and card security codes are masked: the
  customer may have typed one, and the model must not echo it.
- **Commitments.** A sentence promising something the tenant's policy reserves for a person
  (refunds, compensation, vouchers...) is replaced by a line saying a colleague will review
  it, and the reply is flagged `needs_approval`, which escalation routes to the agent queue.

Streaming: deltas already sent cannot be taken back, but holding every clause until it ends
would add several tokens to the time to first token. So `StreamGuard` releases text as soon
as it cannot be the start of a problem, and holds back only what could be: a trailing run of
digits (a card number still arriving); a last word still arriving that could be the canary's
or a commitment word's beginning; and, from a commitment word ("refund", "voucher": the
tenant's list) on, the rest of that sentence until it ends and is checked. Holding from the
promise's opener ("I'll", "we can") instead would hold back every reply that starts "I can
help...", a whole sentence of time to first token; so the words before the commitment word may
show ("I'll issue you a full") but the promise itself never does. Most text is not held at
all; a reply's first word goes out at once. When a check fails mid-stream, streaming stops
and the final reply (which replaces the streamed text on the channel, keyed by reply id)
carries the corrected text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Counter

from shared.linear_re import compile_linear

GUARDRAIL_HITS = Counter(
    "cbd_generation_guardrail_hits_total", "Guardrail findings in replies, by kind.", ["kind"]
)

FLAG_LEAK = "prompt_leak"
FLAG_GUARDRAIL = "guardrail"
FLAG_NEEDS_APPROVAL = "needs_approval"
FLAG_MASKED = "sensitive_masked"

APPROVAL_LINE = (
    "I've passed this request to a colleague who can approve it, and they will get back to "
    "you shortly."
)

DEFAULT_APPROVAL_TERMS = ("refund", "compensation", "voucher", "discount", "goodwill")

SHINGLE_WORDS = 8
"""Words in a row shared with the system prompt that count as a leak of it."""

_WORDS = re.compile(r"[a-z0-9]+")
_NON_ALNUM = re.compile(r"[^a-z0-9]")
# A sentence ends after its punctuation (and closing quotes or brackets) when whitespace
# follows, and at a line break. The form without the look-behind and possessive quantifiers
# re-read a run of "!" from every start inside it ("!!!...x" of 4,000 characters took ~1 s,
# at every streamed piece). Now a match can only start where a run of punctuation starts and
# never gives characters back, so each character is read a bounded number of times. This
# stays on `re` (3.11's possessive quantifiers) rather than RE2: a reply of thousands of
# line breaks has a sentence end per character, and RE2's Python wrapper costs microseconds
# per match where `re` costs a fraction of one.
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]++[\"')\]]*+(?=\s)|\n")


def sentence_ends(text: str, pos: int = 0) -> Iterator[int]:
    """Where each sentence of `text[pos:]` ends, as offsets into `text`."""
    for m in _SENTENCE_END.finditer(text, pos):
        yield m.end()


# The per-turn section's headers and markers (prompt.py): a reply that echoes them is
# reading its instructions out, even when no eight words of the rules are in it.
# The spaces around the tag's slash are one run when there is no slash (`\s*(?:/\s*)?`, not
# `\s*/?\s*`, which split a run of spaces every possible way: quadratic).
_TURN_SECTION = re.compile(
    r"(?:^|[\s\"'(*#-])(?:emotion|strategy|situation|what works|avoid|knowledge|customer tier|"
    r"earlier conversations)(?:\s*\([^)]{0,40}\))?\s*:"
    r"|the customer seems to feel|\(intensity\s+\d|signals:\s*[a-z_]+"
    r"|what you know about this customer|the only facts you may state"
    r"|nothing in the knowledge base matches|<\s*(?:/\s*)?(?:memory|customer)\s*>"
    r"|\[[a-z0-9_]+/[a-z0-9-]+\]|\bopen issue \(",
    re.IGNORECASE,
)

# "I'll", "we will", "I can", "I have", "you'll", "here is": the openers of a promise.
# The space after "I"/"we" is read by one quantifier per alternative: `\s*(?:\s+will|...)`
# split a run of spaces every possible way ("refund I" + 4,000 spaces took 0.9 s).
_PROMISE = re.compile(
    r"\b(?:i|we)(?:\s*(?:'ll|\u2019ll|'ve|\u2019ve)|\s+(?:will|shall|can|have|"
    r"am\s+going\s+to|are\s+going\s+to|would\s+like\s+to))\b"
    r"|\byou(?:'ll|\u2019ll|\s+will)\b|\bhere(?:'s|\u2019s|\s+is)\b"
    r"|\b(?:has|have)\s+been\s+(?:approved|processed|issued|added|applied|sent)\b",
    re.IGNORECASE,
)
# A sentence that defers, asks or denies is not a promise: "a colleague will review your
# refund", "I can't offer a refund", "would you like me to request a refund?".
_DEFERRAL = re.compile(
    r"\b(?:not|cannot|unable|colleague|colleagues|team|review|reviewed|request|requested|"
    r"ask|asked|whether)\b|n't\b|n\u2019t\b|\?",
    re.IGNORECASE,
)

_CARD_RUN = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")
_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CVV = re.compile(r"\b(cvv|cvc|cv2|security code)(\W{0,6})(\d{3,4})\b", re.IGNORECASE)
# Text at the end of the stream that may be a number still arriving: digits, with spaces,
# hyphens and upper-case letters (IBAN groups) between them. Only held when it has a digit.
# RE2 (linear): under Python's `re` every start inside a long run of such characters that
# does not reach the end re-read the run ("A A A ... x" of 4,000 characters took 52 ms, and
# this runs at every streamed piece). `\p{Nd}` is the Unicode digit `re`'s `\d` was.
_TRAILING_NUMBER = compile_linear(r"[\p{Nd}A-Z][\p{Nd}A-Z -]*$")


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn check that payment card numbers carry."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether a string is an IBAN by its mod-97 checksum."""
    compact = iban.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def mask_sensitive(text: str) -> tuple[str, int]:
    """The text with card numbers, SSNs, IBANs and security codes masked, and how many."""
    count = 0

    def card(m: re.Match[str]) -> str:
        nonlocal count
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            count += 1
            return f"[card ending {digits[-4:]}]"
        return m.group(0)

    def ssn(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return "[number removed]"

    def iban(m: re.Match[str]) -> str:
        nonlocal count
        if not iban_valid(m.group(0)):
            return m.group(0)
        count += 1
        return f"[account ending {m.group(0).replace(' ', '')[-4:]}]"

    def cvv(m: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"{m.group(1)}{m.group(2)}[removed]"

    text = _CARD_RUN.sub(card, text)
    text = _SSN.sub(ssn, text)
    text = _IBAN.sub(iban, text)
    text = _CVV.sub(cvv, text)
    return text, count


def _normalise(text: str) -> str:
    return _NON_ALNUM.sub("", text.lower())


@dataclass(frozen=True)
class TenantPolicy:
    """What the assistant may not commit to for a tenant, and the tenant's name."""

    company: str = "our company"
    approval_required: tuple[str, ...] = DEFAULT_APPROVAL_TERMS

    @classmethod
    def load(cls, knowledge_dir: Path, tenant: str) -> TenantPolicy:
        """The tenant's `tenant.yaml`, or the defaults when it has none."""
        path = knowledge_dir / tenant / "tenant.yaml"
        if not path.exists():
            return cls()
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping")
        terms = raw.get("approval_required", DEFAULT_APPROVAL_TERMS)
        if not isinstance(terms, list | tuple) or not all(isinstance(t, str) for t in terms):
            raise ValueError(f"{path}: approval_required must be a list of words")
        return cls(company=str(raw.get("company", cls.company)), approval_required=tuple(terms))


@dataclass(frozen=True)
class Verdict:
    """A checked text: what may be said, and what was found."""

    text: str
    flags: tuple[str, ...] = ()
    leak: str | None = None
    """`canary` or `system_prompt` when the text gave the prompt away (then unusable)."""


class Guardrails:
    """The checks, configured once per service from the canary, system prompts and policy."""

    def __init__(
        self, canary: str, protected: Sequence[str], policy: TenantPolicy | None = None
    ) -> None:
        """`protected`: the prompt texts no reply may quote (the rules, not the persona line,
        which a reply may well echo: "I'm Care, the assistant of ...")."""
        self.canary = _normalise(canary)
        if len(self.canary) < 8:
            raise ValueError("the canary needs at least 8 letters or digits")
        self.policy = policy or TenantPolicy()
        self._shingles: set[tuple[str, ...]] = set()
        for prompt in protected:
            words = _WORDS.findall(prompt.lower())
            for i in range(len(words) - SHINGLE_WORDS + 1):
                self._shingles.add(tuple(words[i : i + SHINGLE_WORDS]))
        terms = "|".join(
            r"[\s-]+".join(re.escape(w) for w in term.lower().split())
            for term in self.policy.approval_required
        )
        self._first_words = tuple(
            {_normalise(t.split()[0]) for t in self.policy.approval_required if t.split()}
        )
        # "credit card" is a card, not a credit.
        self._approval = re.compile(rf"\b(?:{terms})\w*\b(?!\s+cards?\b)", re.IGNORECASE)

    def leak(self, text: str) -> str | None:
        """How the text leaks the prompt (`canary`, `system_prompt`, `turn_section`), or None."""
        if self.canary in _normalise(text):
            return "canary"
        if _TURN_SECTION.search(text):
            return "turn_section"
        words = _WORDS.findall(text.lower())
        for i in range(len(words) - SHINGLE_WORDS + 1):
            if tuple(words[i : i + SHINGLE_WORDS]) in self._shingles:
                return "system_prompt"
        return None

    def promise_start(self, sentence: str) -> int | None:
        """Where a sentence may start becoming a commitment (its first commitment word), or
        None: from there it is held until it ends and is checked."""
        m = self._approval.search(sentence)
        return m.start() if m else None

    def may_become_held(self, fragment: str) -> bool:
        """Whether a word still arriving could turn out to be the canary or a commitment
        word: it waits for its next piece rather than streaming half of it."""
        word = _normalise(fragment)
        if not word:
            return False
        return self.canary.startswith(word) or any(t.startswith(word) for t in self._first_words)

    def is_commitment(self, sentence: str) -> bool:
        """A promise of something only a person may grant, made without deferring."""
        return bool(
            self._approval.search(sentence)
            and _PROMISE.search(sentence)
            and not _DEFERRAL.search(sentence)
        )

    def rewrite_commitments(self, text: str) -> tuple[str, bool]:
        """The text with each committing sentence replaced by the approval line."""
        out: list[str] = []
        found = False
        for sentence in split_sentences(text):
            if self.is_commitment(sentence):
                lead = sentence[: len(sentence) - len(sentence.lstrip())]
                if not found:
                    out.append(lead + APPROVAL_LINE)
                found = True
            else:
                out.append(sentence)
        return "".join(out), found

    def check(self, text: str) -> Verdict:
        """Check a complete text (a final reply, a regenerated one, an agent suggestion)."""
        leak = self.leak(text)
        if leak is not None:
            GUARDRAIL_HITS.labels(FLAG_LEAK).inc()
            return Verdict("", (FLAG_GUARDRAIL, FLAG_LEAK), leak)
        flags: list[str] = []
        text, promised = self.rewrite_commitments(text)
        if promised:
            GUARDRAIL_HITS.labels(FLAG_NEEDS_APPROVAL).inc()
            flags.append(FLAG_NEEDS_APPROVAL)
        text, masked = mask_sensitive(text)
        if masked:
            GUARDRAIL_HITS.labels(FLAG_MASKED).inc()
            flags.append(FLAG_MASKED)
        return Verdict(text, tuple(flags))

    def stream(self) -> StreamGuard:
        """A guard for one streamed reply."""
        return StreamGuard(self)


# A sentence's last punctuation, with any closing quote or bracket, before a space or the end.
# "1." at the start of a line is a list item's number, not a sentence's end.
_TERMINAL = compile_linear(r"[.!?]+[\"')\]]*(?:\s|$)")
_LIST_NUMBER = compile_linear(r"(?m)^[ \t]*[0-9]{1,3}[.)]\s")


def whole_sentences(text: str) -> str:
    """`text` up to the end of its last whole sentence, for a reply the server cut at its
    token limit (it stops mid-sentence, mid-word or inside markup such as "1. **").

    Text with no sentence end at all is kept as it is (trailing space removed): a few
    unfinished words say more than nothing.
    """
    numbers = {m.end() for m in _LIST_NUMBER.finditer(text)}
    last = 0
    for m in _TERMINAL.finditer(text):
        if m.end() not in numbers:
            last = m.end()
    return (text[:last] if last else text).rstrip()


def split_sentences(text: str) -> list[str]:
    """Sentences with their leading whitespace and ending punctuation; joined they are text."""
    parts: list[str] = []
    start = 0
    for end in sentence_ends(text):
        parts.append(text[start:end])
        start = end
    if start < len(text):
        parts.append(text[start:])
    return parts


def _last_word_start(text: str) -> int | None:
    """Where the word at the end of `text` begins, as `re.search(r"\\S+$", text)` finds it
    (a single final newline may follow it), read backwards from the end: the pattern was
    quadratic on a long word followed by a space, and this runs at every streamed piece."""
    end = len(text) - 1 if text.endswith("\n") else len(text)
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return start if start < end else None


@dataclass
class StreamGuard:
    """Checks a reply as it streams; `feed` returns what may be sent now."""

    rails: Guardrails
    raw: str = ""
    released: int = 0
    """How much of `raw` has been let through (masked) so far."""
    sent: list[str] = field(default_factory=list)
    stopped: bool = False
    """A check failed: nothing more is streamed; the final reply carries the correction."""
    reason: str | None = None

    def _sentence_start(self) -> int:
        last = 0
        for end in sentence_ends(self.raw):
            last = end
        return last

    def _hold_from(self) -> int:
        """Where the text that must wait begins (len(raw) when nothing must)."""
        raw = self.raw
        end = len(raw)
        start = self._sentence_start()
        sentence = raw[start:]
        promise = self.rails.promise_start(sentence)
        if promise is not None:
            # The rest of this sentence waits until it ends and is checked whole.
            end = min(end, max(self.released, start + promise))
        number = _TRAILING_NUMBER.search(raw)
        if number is not None and any(ch.isdigit() for ch in number.group(0)):
            end = min(end, number.start())
        # A last word still arriving (no space after it yet) may be the canary's beginning.
        word = _last_word_start(raw)
        if word is not None and self.rails.may_become_held(raw[word:].rstrip("\n")):
            end = min(end, word)
        return max(end, self.released)

    def feed(self, piece: str) -> str:
        """Take the next piece of the reply; return the text that may be streamed now."""
        if self.stopped:
            return ""
        self.raw += piece
        if self.rails.leak(self.raw) is not None:
            self.stopped, self.reason = True, "leak"
            return ""
        # Every sentence that ended since the last release is checked whole.
        start = self._sentence_start()
        for sentence in split_sentences(self.raw[:start])[-4:]:
            if self.rails.is_commitment(sentence):
                # The reply ends with the promise replaced; what came after it is dropped
                # with it, since it may build on the promise.
                self.stopped, self.reason = True, "commitment"
                self.raw = self.raw[:start]
                return ""
        return self._release(self._hold_from())

    def _release(self, end: int) -> str:
        if end <= self.released:
            return ""
        text, _ = mask_sensitive(self.raw[self.released : end])
        self.released = end
        self.sent.append(text)
        return text

    def finish(self, *, cut: bool = False) -> tuple[str, Verdict]:
        """The stream ended: the last text to send (if any) and the final reply's verdict.

        When nothing was stopped or changed, the final text is exactly what streamed, so the
        customer never sees the reply jump. A reply the server `cut` at its token limit ends
        at its last whole sentence; when some of what streamed goes, the final reply replaces
        what streamed.
        """
        if cut and not self.stopped:
            whole = whole_sentences(self.raw)
            if len(whole) < self.released:
                verdict = self.rails.check(whole)
                if verdict.leak is None:
                    return "", verdict
            self.raw = whole
        verdict = self.rails.check(self.raw.strip())
        if self.stopped or verdict.leak is not None:
            return "", verdict
        rest, _ = mask_sensitive(self.raw[self.released :])
        if FLAG_NEEDS_APPROVAL in verdict.flags:
            # The held sentence was a promise: send nothing more; the final reply replaces it.
            return "", verdict
        self.released = len(self.raw)
        if rest:
            self.sent.append(rest)
        return rest, Verdict("".join(self.sent).strip(), verdict.flags)
