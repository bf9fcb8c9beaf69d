"""Payment and identity numbers out of customer text, before it is published or stored.

Card data must never rest (PCI DSS 3.3-3.5): a card number a customer types into the chat
would otherwise land in Kafka, Redis, PostgreSQL, the audit ledger and the LLM's prompt. The
edge replaces each one with a token that still lets a person help ("[card ending 1111]"),
and nothing downstream ever sees the raw value.

What is replaced, and how a candidate is confirmed (so an order number is left alone):
- card numbers (PAN): 13-19 digits, grouped by spaces (single or double), `-`, `.`, `/`,
  `_`, no-break or zero-width spaces, confirmed by the Luhn checksum;
- security codes (CVV/CVC/CID): 3-4 digits after words that name them ("CVV 123",
  "security code is 123", "the 3 digits on the back are 123");
- IBANs: country, check digits and 11-30 letters or digits (grouped or not), confirmed by
  the ISO 7064 mod 97 check;
- US social security numbers: `123-45-6789` or `123 45 6789` (rules of issue applied), or nine
  digits right after "SSN" / "social security number".

The patterns are linear: bounded repetitions of fixed character classes, no nested
quantifiers, so a hostile message costs time proportional to its length.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

# Separators people (and their phones) put between digit groups. Zero-width and no-break
# spaces are included because pasted numbers carry them and a filter must not be fooled.
_SEP = r"[ \t\-./_\u00a0\u2007\u202f\u2009\u200b\u200c\u200d\u2060\ufeff\u2010-\u2015]"
_SEP_CHARS = re.compile(_SEP)

# A run of digit groups, each separated by up to three separators (" - "); \d also matches
# full-width digits. Card numbers are looked for inside each run (see `_card_spans`).
_RUN = re.compile(rf"\d(?:{_SEP}{{0,3}}\d)*")
_GROUP = re.compile(r"\d+")

# Whitespace runs are bounded ({1,3}), so no pattern backtracks over a long gap.
_CVV = re.compile(
    r"\b(?:cvv2?|cvc2?|cvn|cid|csc|security\s{1,3}(?:code|number)|"
    r"card\s{1,3}verification(?:\s{1,3}(?:code|value|number))?|"
    r"verification\s{1,3}(?:code|number)|"
    r"(?:three|four|3|4)[\s-]digits?(?:\s{1,3}(?:code|number))?"
    r"(?:\s{1,3}on\s{1,3}the\s{1,3}(?:back|front))?)"
    r"(?:\s{1,3}(?:is|was|are|were|number|no\.?|:|=|-|#)){0,3}"
    r"\s{0,3}(?:[:=#-]\s{0,3})?(\d{3,4})(?!\d)",
    re.IGNORECASE,
)

_IBAN = re.compile(r"\b([A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){11,30})\b")

_SSN = re.compile(r"(?<![\d\-])(\d{3})([ \-])(\d{2})\2(\d{4})(?![\d\-])")
_SSN_NAMED = re.compile(
    r"\b(?:ssn|social\s{1,3}security(?:\s{1,3}(?:number|no\.?|#))?)"
    r"(?:\s{1,3}(?:is|was|:|=|-|#)){0,2}\s{0,3}(?:[:=#-]\s{0,3})?(\d{9})(?!\d)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Redaction:
    """Text with its sensitive numbers replaced, and what kinds were found."""

    text: str
    found: Counter[str] = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        """True when anything was replaced."""
        return bool(self.found)


def _digits(value: str) -> str:
    """The digits of `value` as ASCII (full-width and other Unicode digits included)."""
    return "".join(str(unicodedata.digit(c)) for c in value if c.isdigit())


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 structure and the ISO 7064 mod 97-10 check digits."""
    iban = re.sub(r"[ \-]", "", candidate).upper()
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def ssn_plausible(area: str, group: str, serial: str) -> bool:
    """The SSA's rules of issue: no 000/666/9xx area, no 00 group, no 0000 serial."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _card_spans(run: str) -> list[tuple[int, int, str]]:
    """(start, end, digits) of each card number in a run of digit groups.

    The whole run is tried first; otherwise consecutive groups, longest first from each
    group, so a card number written next to a phone number or a date is still found. A run
    of more than 19 digits without separators is left alone: nothing tells where a card
    number would start in it. Luhn sums come from prefix sums, so a long run costs linear
    time.
    """
    groups = [(m.start(), m.end(), _digits(m.group(0))) for m in _GROUP.finditer(run)]
    digits = "".join(g[2] for g in groups)
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return [(0, len(run), digits)]
    # plain[k][p]: sum of digits at positions < p with p % 2 == k; doubled likewise, Luhn-doubled.
    plain = [[0], [0]]
    doubled = [[0], [0]]
    for pos, ch in enumerate(digits):
        n = int(ch)
        d = n * 2 - 9 if n > 4 else n * 2
        for k in (0, 1):
            plain[k].append(plain[k][-1] + (n if pos % 2 == k else 0))
            doubled[k].append(doubled[k][-1] + (d if pos % 2 == k else 0))

    def valid(a: int, b: int) -> bool:
        # From the right, the last digit (b - 1) is kept and every second one doubled.
        kept = (b - 1) % 2
        total = plain[kept][b] - plain[kept][a] + doubled[1 - kept][b] - doubled[1 - kept][a]
        return total % 10 == 0

    bounds = [0]
    for g in groups:
        bounds.append(bounds[-1] + len(g[2]))
    spans: list[tuple[int, int, str]] = []
    i = 0
    while i < len(groups):
        last: int | None = None
        for j in range(i, len(groups)):
            length = bounds[j + 1] - bounds[i]
            if length > 19:
                break
            if length >= 13 and valid(bounds[i], bounds[j + 1]):
                last = j
        if last is None:
            i += 1
            continue
        spans.append((groups[i][0], groups[last][1], digits[bounds[i] : bounds[last + 1]]))
        i = last + 1
    return spans


def _cards(match: re.Match[str], found: Counter[str]) -> str:
    run = match.group(0)
    spans = _card_spans(run)
    if not spans:
        return run
    out: list[str] = []
    last = 0
    for start, end, digits in spans:
        found["card"] += 1
        out.append(run[last:start])
        out.append(f"[card ending {digits[-4:]}]")
        last = end
    out.append(run[last:])
    return "".join(out)


def _iban(match: re.Match[str], found: Counter[str]) -> str:
    """The longest valid IBAN the match starts with (words may follow a grouped IBAN)."""
    raw = match.group(1)
    for end in range(len(raw), 14, -1):
        candidate = raw[:end]
        if candidate[-1] in " -" or (
            end < len(raw) and raw[end].isalnum() and candidate[-1].isalnum()
        ):
            continue
        if iban_valid(candidate):
            found["iban"] += 1
            compact = re.sub(r"[ \-]", "", candidate)
            return f"[IBAN ending {compact[-4:]}]" + raw[end:]
    return raw


def _ssn(match: re.Match[str], found: Counter[str]) -> str:
    if not ssn_plausible(match.group(1), match.group(3), match.group(4)):
        return match.group(0)
    found["ssn"] += 1
    return "[SSN]"


def _named(match: re.Match[str], found: Counter[str], kind: str, token: str) -> str:
    found[kind] += 1
    start, end = match.span(1)
    whole = match.group(0)
    offset = match.start(0)
    return whole[: start - offset] + token + whole[end - offset :]


def redact(text: str) -> Redaction:
    """Replace card numbers, security codes, IBANs and SSNs in `text` by tokens.

    Runs before anything else sees the text. IBANs go first (their digits could pass for a
    card number), cards next, then security codes and SSNs in what is left.
    """
    found: Counter[str] = Counter()
    out = _IBAN.sub(lambda m: _iban(m, found), text)
    out = _RUN.sub(lambda m: _cards(m, found), out)
    out = _CVV.sub(lambda m: _named(m, found, "security_code", "[security code]"), out)
    out = _SSN_NAMED.sub(lambda m: _named(m, found, "ssn", "[SSN]"), out)
    out = _SSN.sub(lambda m: _ssn(m, found), out)
    return Redaction(out, found)


def contains_card_number(text: str) -> bool:
    """True when `text` still holds a Luhn-valid 13-19 digit number (any separators)."""
    return any(_card_spans(match.group(0)) for match in _RUN.finditer(text))


def strip_separators(text: str) -> str:
    """`text` without the separators a card number may be written with (for scans)."""
    return _SEP_CHARS.sub("", text)
