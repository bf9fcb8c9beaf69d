"""The care check: what every bot reply (and every agent draft) must be before anyone sees it.

Four checks, each naming what it found (a `CareFinding` with a `ReplyFlag`):

- **grounding**: every phone number, email address, link, amount or price, date, order or
  reference number and other figure in the reply appears in a source: the tenant's knowledge
  base, the turn's context (profile, memories, open issues, history), the customer's own
  messages, or an action's result. A claim of having done something ("I've checked your
  order", "your refund has been processed") passes only when an action result says that was
  done; the platform has no order system yet, so today no such claim passes.
- **tone**: the tone analyzer (`tone.py`) reads each sentence; hostile, sarcastic, blaming or
  dismissive fails. When the customer is upset, the reply's first sentence (a bare greeting
  aside) must acknowledge it.
- **relevance**: the whole reply's embedding similarity to the message and the retrieved
  knowledge reaches a threshold calibrated on a labelled set (`relevance.py`).
- **co-creation**: when the playbook says the exact request cannot be met, no sentence may say
  it can, and the reply must offer the playbook's alternative.

Plus two the model comparison found: a reply that says word for word what the previous bot
reply said (`repeated`), and the prompt leak checks of the guardrails (canary, rules, the
per-turn section headers). And the **voice** check (`voice.py`): a sentence that talks about
the customer instead of to them, meta text (notes about being an AI, "Here is a response:",
role labels, placeholders, paraphrased instructions), or another language than the
customer's.

Sentence checks (grounding, tone, acknowledgement, overpromise) decide what may stream: a
sentence is released once it has ended and passed, so nothing invented or unkind is ever shown.
Whole-reply checks (relevance, a missing alternative, repetition) can only be judged at the
end; a reply failing one of them is regenerated or composed, and the final `reply.generated`
replaces the streamed text on the channel (what streamed had passed the sentence checks).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.generation.guardrails import (
    FLAG_NEEDS_APPROVAL,
    Guardrails,
    Verdict,
    mask_sensitive,
    sentence_ends,
    split_sentences,
    whole_sentences,
)
from services.generation.knowledge import KnowledgeBase
from services.generation.playbooks import PlaybookMatch, cue_pattern
from services.generation.prompt import BuiltPrompt
from services.generation.relevance import RelevanceScorer
from services.generation.settings import GenerationSettings
from services.generation.tone import UNKIND_TONES, CueToneAnalyzer, ToneAnalyzer, ToneCues
from services.generation.voice import VoiceCheck
from shared.embedding import Embedder, MiniLmEmbedder
from shared.events import (
    NEGATIVE_EMOTIONS,
    NEGATIVE_SENTIMENT,
    CareFinding,
    ReplyFlag,
    Role,
    TurnRouted,
)
from shared.language import LanguageIdentifier, default_identifier
from shared.linear_re import LinearMatch, compile_linear

_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
# RE2 (linear): under `re` every word start inside a long run of letters, digits and hyphens
# re-read the rest of the run looking for the dot ("1-1-1-...x" of 4,000 characters: 1.3 s).
# `_NOT_IN_URL` is `[^\s<>"')\]]` with the whitespace `re`'s `\s` knows (RE2's is ASCII).
_NOT_IN_URL = r"[^\s\p{Z}\x{0b}\x{1c}-\x{1f}\x{85}<>\"')\]]"
_URL = compile_linear(
    rf"\b(?:https?://|www\.){_NOT_IN_URL}+"
    r"|\b[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|ly|co|uk|info|biz|app|me|us|"
    r"eu|de|fr|shop|store|help|support|link|gl|gd|to|ai|dev|biz|online|site|xyz)\b"
    rf"(?:/{_NOT_IN_URL}*)?"
    # Any other name with a path ("bramble.example/reset") is a link too.
    rf"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{{2,12}}/{_NOT_IN_URL}*",
    ignore_case=True,
)
# RE2 with Unicode letters and digits for `re`'s `\w`: under `re` every word start inside a
# long run such as "1-1-1-...x" re-read the rest of the run looking for the "@".
_EMAIL = compile_linear(r"\b[\p{L}\p{N}_.+-]+@[\p{L}\p{N}_-]+(?:\.[\p{L}\p{N}_-]+)+\b")
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().-]{5,}\d(?![\w])")
_DATE = re.compile(
    rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\b"
    rf"|\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b"
    r"|\b\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}\b"
    r"|\bthe\s+\d{1,2}(?:st|nd|rd|th)\b",
    re.IGNORECASE,
)
# RE2: under `re` every word start in "1,1,1,...x" re-read the rest of the run looking for a
# unit (1.3 s at 4,000 characters). `\p{Nd}` and `_SPACE` are `re`'s Unicode `\d` and `\s`.
_SPACE = r"[\s\p{Z}\x{0b}\x{1c}-\x{1f}\x{85}]"
_AMOUNT = compile_linear(
    rf"(?:[£$€¥]|\b(?:usd|gbp|eur){_SPACE}?){_SPACE}?\p{{Nd}}[\p{{Nd}},]*(?:\.\p{{Nd}}+)?"
    rf"|\b\p{{Nd}}[\p{{Nd}},]*(?:\.\p{{Nd}}+)?{_SPACE}?(?:%|percent\b|pounds?\b|dollars?\b|"
    r"euros?\b|pence\b|p\b|usd\b|gbp\b|eur\b)",
    ignore_case=True,
)
# Bounded where a start inside a long run would otherwise re-read the rest of it ("1-1-1-...!"
# took 0.8 s at 4,000 characters): a hyphenated code is looked for in its first 40
# characters and has at most 9 groups of 24; one quantifier per run of spaces after the word.
_REFERENCE = re.compile(
    r"#\s?[a-z0-9-]*\d[a-z0-9-]*"
    r"|\b(?:order|ref(?:erence)?|ticket|case|tracking|invoice|account|confirmation)"
    r"(?:\s+(?:number|no\.?|id|code))?\s*(?:[:#]\s*)?[a-z]*\d[a-z0-9-]*"
    r"|\b(?=[a-z0-9-]{0,40}\d)(?=[a-z0-9-]{0,40}[a-z])[a-z0-9]{1,24}(?:-[a-z0-9]{1,24}){1,8}\b"
    r"|\b(?=[a-z]*\d)(?=\d*[a-z])[a-z]{1,5}\d{3,}[a-z0-9]*\b",
    re.IGNORECASE,
)
_NUMBER_WORD = (
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
    r"forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand"
)
# An amount in words ("twenty pounds", "fifty percent"): grounded when a source says the same.
_SPELLED_AMOUNT = re.compile(
    rf"\b(?:{_NUMBER_WORD})(?:[\s-](?:and\s)?(?:{_NUMBER_WORD})){{0,4}}\s"
    r"(?:pounds?|dollars?|euros?|pence|percent|per\scent)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_ORDINAL_SUFFIX = re.compile(r"(?<=\d)(?:st|nd|rd|th)\b", re.IGNORECASE)

_DONE = (
    r"checked|looked\s+(?:into|at|up)|updated|changed|amended|refunded|cancell?ed|processed|"
    r"issued|sent|resent|reset|frozen|blocked|unblocked|arranged|booked|scheduled|credited|"
    r"reversed|applied|fixed|resolved|corrected|removed|added|verified|confirmed|escalated|"
    r"submitted|ordered|replaced|reshipped|located|found|traced|contacted|emailed|notified|"
    r"closed|reactivated|unlocked|approved|waived|redirected|rerouted|investigated|forwarded|"
    r"raised|logged|filed|created|opened|cleared|released|returned|expedited|upgraded"
)
# Doing it now, or promising to: what only an action could make true ("I'm refunding you",
# "I'll cancel it"). Offers to look ("I'll check") are not here: they promise no outcome.
_DOING = (
    r"refunding|cancell?ing|processing|issuing|sending|resending|crediting|reversing|"
    r"replacing|reshipping|arranging|booking|updating|changing|unlocking|reactivating|"
    r"waiving|expediting|upgrading"
)
_PROMISED = (
    r"refund|cancel|credit|reverse|replace|reship|waive|compensate|unlock|reactivate|"
    r"reimburse|expedite|process"
)
# One quantifier per run of spaces after "I"/"we" (`\s*(?:\s+have|...)` split a run of
# spaces every possible way: "and I" + 4,000 spaces took 0.18 s).
_ACTION_CLAIM = re.compile(
    rf"\b(?:i|we)(?:\s*['\u2019]ve|\s+have|\s+had)\s+(?:already\s+|just\s+|now\s+|also\s+)?"
    rf"(?:gone\s+ahead\s+and\s+)?({_DONE})\b"
    rf"|\b(?:i|we)\s+(?:already\s+|just\s+)?({_DONE})\b(?!\s+(?:if|whether|that\s+you))"
    rf"|\b(?:i|we)\s+went\s+ahead\s+and\s+({_DONE})\b"
    rf"|\b(?:has|have|is|are)\s+(?:now\s+|already\s+|just\s+)?(?:been\s+)({_DONE})\b"
    # "Your order was cancelled", "your account is now unlocked", "the refund was issued".
    rf"|\b(?:your|the)\s+(?:[a-z]+\s+){{0,2}}(?:was|were|is|are)\s+"
    rf"(?:now\s+|just\s+|already\s+|successfully\s+|all\s+)?({_DONE})\b"
    rf"|\b(?:our|the|my)\s+(?:team|staff|agents?|colleagues?)\s+(?:has\s+|have\s+)?"
    rf"(?:already\s+|just\s+)?({_DONE})\b"
    rf"|\b(?:i['\u2019]m|i\s+am|we['\u2019]re|we\s+are)\s+(?:now\s+|currently\s+|already\s+)?"
    rf"({_DOING})\b"
    rf"|\b(?:i|we)(?:['\u2019]ll|\s+will)\s+(?:now\s+|immediately\s+|go\s+ahead\s+and\s+)?"
    rf"({_PROMISED})\b"
    r"|\bi\s+can\s+see\s+(?:that\s+)?(?:your|the)\s+(order|parcel|package|payment|account|"
    r"card|charge|refund|booking|delivery)",
    re.IGNORECASE,
)
# "has been sent" in a sentence that defers or explains is not our own claim: "a reset email
# is sent when you ask", "once it has been processed by the team".
_NOT_A_CLAIM = re.compile(
    r"\b(?:once|when|after|if|until|whether|usually|normally|automatically)\b|\?",
    re.IGNORECASE,
)
_AFFIRM = re.compile(
    r"\b(?:yes|sure|absolutely|certainly|definitely|of course|no problem|happy to|"
    r"(?:you|we|i)\s+(?:can|could|will be able to)|(?:we|i)\s+(?:do|will|have|offer|make|sell|"
    r"stock)|(?:is|are)\s+(?:available|possible|in stock)|you'll\s+(?:get|receive|have))\b",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|cannot|unable|unfortunately|sadly|afraid|only|however|but)\b|n't\b",
    re.IGNORECASE,
)
_GREETING = re.compile(
    r"^\W*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening))\b[^.!?]{0,30}[.!?,]*$",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9]+")

CHECKS_PER_SENTENCE = ("grounding", "tone", "acknowledgement", "co_creation", "voice", "language")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _canon_number(token: str) -> str:
    """'4.99' and '4.990' meet; '1,000' and '1000' meet; '05' and '5' meet."""
    token = token.replace(",", "")
    if "." in token:
        whole, frac = token.split(".", 1)
        frac = frac.rstrip("0")
        token = f"{whole.lstrip('0') or '0'}.{frac}" if frac else whole
    return token.lstrip("0") or "0"


def words(text: str) -> list[str]:
    """Lower-case words, for word-for-word comparisons."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


@dataclass(frozen=True)
class Sources:
    """Everything a reply's facts may come from, indexed for the grounding check."""

    text: str
    """All sources, lower-cased, for links, emails and codes."""
    numbers: frozenset[str]
    """Every number in the sources, canonical."""
    digit_runs: tuple[str, ...]
    """The digits of every phone-like run in the sources."""
    actions: tuple[str, ...] = ()
    """What actions' results say was done (lower-cased)."""

    @classmethod
    def of(cls, texts: Iterable[str], actions: Sequence[str] = ()) -> Sources:
        """Index these texts (and action results, which also back facts)."""
        joined = "\n".join([*texts, *actions])
        flat = _ORDINAL_SUFFIX.sub("", joined)
        return cls(
            text=joined.lower(),
            numbers=frozenset(_canon_number(n) for n in _NUMBER.findall(flat)),
            digit_runs=tuple(_digits(m.group(0)) for m in _PHONE.finditer(joined)),
            actions=tuple(a.lower() for a in actions),
        )

    def has_number(self, token: str) -> bool:
        """Whether every number in the token is in the sources."""
        nums = _NUMBER.findall(_ORDINAL_SUFFIX.sub("", token))
        return all(_canon_number(n) in self.numbers for n in nums)

    def has_digits(self, digits: str) -> bool:
        """Whether a phone-like digit string is in the sources (spacing aside)."""
        return any(digits in run for run in self.digit_runs) or digits in _digits(self.text)

    def has_text(self, token: str) -> bool:
        """Whether a link, email or code is in the sources (case aside)."""
        return token.lower().rstrip(".,;:!?") in self.text

    def backs_action(self, verb: str) -> bool:
        """Whether an action result says this was done."""
        stem = verb.lower().split()[0][:5]
        return any(stem in result for result in self.actions)


def grounding_findings(sentence: str, sources: Sources) -> list[CareFinding]:
    """Facts in a sentence that no source backs, and claims of actions nobody took."""
    return [*_fact_findings(sentence, sources), *_claim_findings(sentence, sources)]


def _claim_findings(sentence: str, sources: Sources) -> list[CareFinding]:
    if _NOT_A_CLAIM.search(sentence):
        return []
    found: list[CareFinding] = []
    for m in _ACTION_CLAIM.finditer(sentence):
        verb = next(g for g in m.groups() if g)
        # Said in the knowledge or by the customer ("the store is closed on Sundays"): a
        # quotation of a source, not a claim of our own.
        if m.group(0).lower().replace("\u2019", "'") in sources.text:
            continue
        if not sources.backs_action(verb):
            found.append(
                CareFinding(
                    check="grounding",
                    flag=ReplyFlag.UNBACKED_ACTION,
                    detail=f"claims an action no result backs: {m.group(0).strip()}",
                )
            )
    return found


def _fact_findings(sentence: str, sources: Sources) -> list[CareFinding]:  # noqa: PLR0912
    # One pass per kind of fact, most specific first; a span taken by one kind is not read
    # again as another ("0800 123 4567" is a phone number, not three figures).
    found: list[CareFinding] = []
    # Which characters a fact already took, one byte each: checking a span against a list of
    # taken spans cost (facts x facts), quadratic on a sentence of thousands of figures.
    taken = bytearray(len(sentence))

    def free(m: re.Match[str] | LinearMatch) -> bool:
        return not any(taken[m.start() : m.end()])

    def take(m: re.Match[str] | LinearMatch) -> None:
        taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())

    def miss(kind: str, token: str) -> None:
        found.append(
            CareFinding(
                check="grounding",
                flag=ReplyFlag.UNGROUNDED,
                detail=f"{kind} not in any source: {token.strip()}",
            )
        )

    for email in _EMAIL.finditer(sentence):
        take(email)
        if not sources.has_text(email.group(0)):
            miss("email", email.group(0))
    for link in _URL.finditer(sentence):
        if free(link):
            take(link)
            if not sources.has_text(link.group(0)):
                miss("link", link.group(0))
    for m in _DATE.finditer(sentence):
        take(m)
        if not sources.has_number(m.group(0)):
            miss("date", m.group(0))
    for m in _PHONE.finditer(sentence):
        digits = _digits(m.group(0))
        if free(m) and len(digits) >= 7:
            take(m)
            if not sources.has_digits(digits):
                miss("phone number", m.group(0))
    for amount in _AMOUNT.finditer(sentence):
        if free(amount):
            take(amount)
            if not sources.has_number(amount.group(0)):
                miss("amount", amount.group(0))
    for m in _SPELLED_AMOUNT.finditer(sentence):
        if not sources.has_text(m.group(0)):
            miss("amount", m.group(0))
    for m in _REFERENCE.finditer(sentence):
        if free(m) and any(ch.isdigit() for ch in m.group(0)):
            take(m)
            code = re.sub(r"^.*?(?=[a-z0-9]*\d)", "", m.group(0), flags=re.IGNORECASE)
            # Known as written, or every number in it is known ("order 1042", "24-hour").
            if not (sources.has_text(code) or sources.has_number(code)):
                miss("reference", m.group(0))
    for m in _NUMBER.finditer(sentence):
        if free(m):
            take(m)
            if not sources.has_number(m.group(0)):
                miss("figure", m.group(0))
    return found


@dataclass(frozen=True)
class CareReport:
    """The care check's findings for one text, and the relevance score if measured."""

    findings: tuple[CareFinding, ...] = ()
    relevance: float | None = None

    @property
    def passed(self) -> bool:
        """No finding."""
        return not self.findings

    @property
    def flags(self) -> tuple[ReplyFlag, ...]:
        """Each finding's flag once, in order."""
        return tuple(dict.fromkeys(f.flag for f in self.findings))


@dataclass
class TurnCheck:
    """The care check configured for one turn: its sources, playbook and customer."""

    sources: Sources
    message: str
    knowledge: tuple[str, ...]
    tone: ToneAnalyzer
    cues: ToneCues
    customer_negative: bool = False
    match: PlaybookMatch | None = None
    previous_reply: str | None = None
    relevance: RelevanceScorer | None = None
    relevance_threshold: float = 0.0
    voice: VoiceCheck = field(default_factory=VoiceCheck)
    _request: re.Pattern[str] | None = field(default=None, init=False, repr=False)
    _alternatives: re.Pattern[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        book = self.match.playbook if self.match else None
        if self.match is not None and self.match.unmet and book and book.unmet:
            request = book.unmet.request or list(self.match.unmet_cues)
            self._request = re.compile("|".join(cue_pattern(c) for c in request), re.IGNORECASE)
            self._alternatives = re.compile(
                "|".join(cue_pattern(c) for c in book.unmet.alternatives), re.IGNORECASE
            )

    @property
    def unmet(self) -> bool:
        """Whether the playbook says the exact request cannot be met."""
        return self._request is not None

    def sentence(self, sentence: str, *, first: bool) -> list[CareFinding]:
        """The sentence checks, for one sentence; `first`: the reply's opening sentence."""
        if not sentence.strip():
            return []
        found = grounding_findings(sentence, self.sources)
        found += self.voice.findings(sentence)
        reading = self.tone.analyze(sentence)
        for signal in reading.signals:
            if signal in UNKIND_TONES:
                found.append(
                    CareFinding(
                        check="tone",
                        flag=ReplyFlag.UNKIND_TONE,
                        detail=f"{signal}: {reading.evidence.get(signal, '')}".strip(": "),
                    )
                )
        if first and self.customer_negative and not self.cues.acknowledges(sentence):
            found.append(
                CareFinding(
                    check="acknowledgement",
                    flag=ReplyFlag.NO_ACKNOWLEDGEMENT,
                    detail=f"the customer is upset and the reply opens: {sentence.strip()[:80]}",
                )
            )
        if self._request is not None and self._overpromises(sentence):
            found.append(
                CareFinding(
                    check="co_creation",
                    flag=ReplyFlag.OVERPROMISE,
                    detail=f"says an unmet request can be met: {sentence.strip()[:80]}",
                )
            )
        return found

    def _overpromises(self, sentence: str) -> bool:
        if self._request is None or self._alternatives is None:
            return False
        return bool(
            self._request.search(sentence)
            and _AFFIRM.search(sentence)
            and not _NEGATION.search(sentence)
            and not self._alternatives.search(sentence)
        )

    def needs_acknowledgement_in(self, sentence: str) -> bool:
        """Whether this sentence is where the acknowledgement must be (not a bare greeting)."""
        return not _GREETING.match(sentence.strip())

    def whole(self, text: str, *, relevance: bool = True) -> CareReport:
        """Every check on a complete reply."""
        findings: list[CareFinding] = []
        first = True
        for sentence in split_sentences(text):
            if not sentence.strip():
                continue
            opening = first and self.needs_acknowledgement_in(sentence)
            findings += self.sentence(sentence, first=opening)
            if opening:
                first = False
        if self._alternatives is not None and not self._alternatives.search(text):
            findings.append(
                CareFinding(
                    check="co_creation",
                    flag=ReplyFlag.NO_ALTERNATIVE,
                    detail="the request cannot be met and no alternative is offered",
                )
            )
        if self.previous_reply and words(text) == words(self.previous_reply):
            findings.append(
                CareFinding(
                    check="repetition",
                    flag=ReplyFlag.REPEATED,
                    detail="word for word the previous reply",
                )
            )
        score: float | None = None
        if relevance and self.relevance is not None and text.strip():
            score = self.relevance.score(text, self.message, self.knowledge)
            if score < self.relevance_threshold:
                findings.append(
                    CareFinding(
                        check="relevance",
                        flag=ReplyFlag.OFF_TOPIC,
                        detail=f"similarity {score:.2f} < {self.relevance_threshold:.2f}",
                    )
                )
        return CareReport(tuple(findings), score)


def customer_is_negative(turn: TurnRouted, sarcastic: bool = False) -> bool:
    """Whether the reply must open by acknowledging how the customer feels."""
    emotion = turn.emotion
    if emotion.degraded:
        return sarcastic
    return (
        emotion.label in NEGATIVE_EMOTIONS or emotion.sentiment <= NEGATIVE_SENTIMENT or sarcastic
    )


def context_texts(turn: TurnRouted) -> list[str]:
    """What the turn's context says: profile, memories, open issues, history."""
    ctx = turn.context
    texts: list[str] = [turn.message.text]
    texts += [t.text for t in ctx.recent_turns]
    if ctx.profile is not None:
        texts += [
            v
            for v in (ctx.profile.name, ctx.profile.preferred_name, ctx.profile.purchase_summary)
            if v
        ]
        texts += ctx.profile.channels
    texts += [m.text for m in ctx.memories]
    texts += [i.summary for i in ctx.open_issues]
    if ctx.emotional_history:
        texts.append(ctx.emotional_history)
    return texts


def previous_bot_reply(turn: TurnRouted) -> str | None:
    """The last thing the bot said in this conversation, if memory recalls it."""
    return next((t.text for t in reversed(turn.context.recent_turns) if t.role is Role.BOT), None)


@dataclass
class CheckedStream:
    """Streams a reply sentence by sentence, each released once it has ended and passed.

    The guardrails still run on every piece (a leak stops the stream at once; a commitment
    ends it with the approval line), and sensitive numbers are masked on release.
    """

    rails: Guardrails
    check: TurnCheck
    raw: str = ""
    checked: int = 0
    """How much of `raw` is whole sentences that passed."""
    released: int = 0
    sent: list[str] = field(default_factory=list)
    stopped: bool = False
    reason: str | None = None
    """`leak`, `commitment` or `care` once the stream stopped."""
    findings: list[CareFinding] = field(default_factory=list)
    opening: bool = True
    """The sentence that must acknowledge the customer is still to come."""
    check_s: list[float] = field(default_factory=list)
    """Seconds spent checking each batch of ended sentences (the streaming cost)."""
    check_cpu_s: list[float] = field(default_factory=list)
    """The same in this thread's CPU time: what the check costs when the machine is busy
    with other work (wall time then includes waiting for a core)."""

    def _sentence_end(self) -> int:
        last = self.checked
        for end in sentence_ends(self.raw, self.checked):
            last = end
        return last

    def _check_sentence(self, sentence: str) -> list[CareFinding]:
        opening = self.opening and bool(sentence.strip())
        opening = opening and self.check.needs_acknowledgement_in(sentence)
        found = self.check.sentence(sentence, first=opening)
        if opening:
            self.opening = False
        return found

    def feed(self, piece: str) -> str:
        """Take the next piece; return the text that may be shown now."""
        if self.stopped:
            return ""
        self.raw += piece
        if self.rails.leak(self.raw) is not None:
            self.stopped, self.reason = True, "leak"
            return ""
        end = self._sentence_end()
        if end > self.checked:
            started = time.perf_counter()
            cpu = time.thread_time()
            for sentence in split_sentences(self.raw[self.checked : end]):
                if self.rails.is_commitment(sentence):
                    # Ends with the approval line (see finish); what follows may build on it.
                    self.raw = self.raw[: self.checked + len(sentence)]
                    self.stopped, self.reason = True, "commitment"
                    return ""
                found = self._check_sentence(sentence)
                if found:
                    self.findings += found
                    self.stopped, self.reason = True, "care"
                    self.check_s.append(time.perf_counter() - started)
                    self.check_cpu_s.append(time.thread_time() - cpu)
                    return ""
                self.checked += len(sentence)
            self.check_s.append(time.perf_counter() - started)
            self.check_cpu_s.append(time.thread_time() - cpu)
        return self._release(self.checked)

    def _copying_previous(self, end: int) -> bool:
        previous = self.check.previous_reply
        if not previous:
            return False
        so_far = words(self.raw[:end])
        return bool(so_far) and words(previous)[: len(so_far)] == so_far

    def _release(self, end: int) -> str:
        # Word for word the previous reply so far: held until it says something new.
        if end <= self.released or self._copying_previous(end):
            return ""
        text, _ = mask_sensitive(self.raw[self.released : end])
        self.released = end
        self.sent.append(text)
        return text

    def finish(self, *, cut: bool = False) -> tuple[str, str, CareReport, Verdict]:
        """The stream ended: (last text to show, the final text, the care report, the
        guardrails' verdict). A failed report or a leak means the final text is unusable.

        A reply the server `cut` at its token limit ends at its last whole sentence (what
        streamed already was whole sentences, so nothing shown is taken back unless a list
        number or a line without an end was released).
        """
        replaced = False
        if cut and self.reason != "care":
            whole = whole_sentences(self.raw)
            replaced = len(whole) < self.released
            self.raw = whole
        verdict = self.rails.check(self.raw.strip())
        if self.reason == "care":
            return "", "", CareReport(tuple(self.findings)), verdict
        if verdict.leak is not None:
            return "", "", CareReport(), verdict
        report = self.check.whole(verdict.text)
        if not report.passed:
            return "", "", report, verdict
        if replaced or self.reason == "commitment" or FLAG_NEEDS_APPROVAL in verdict.flags:
            # The final reply (with the approval line) replaces what streamed.
            return "", verdict.text, report, verdict
        rest, _ = mask_sensitive(self.raw[self.released :])
        self.released = len(self.raw)
        if rest:
            self.sent.append(rest)
        return rest, "".join(self.sent).strip(), report, verdict


@dataclass
class CareKit:
    """What the care check needs for every turn, built once per service."""

    tone: ToneAnalyzer
    cues: ToneCues
    knowledge: tuple[str, ...]
    """The tenant's whole knowledge base, as text: every fact in it may be stated."""
    relevance: RelevanceScorer | None = None
    relevance_threshold: float = 0.0
    languages: LanguageIdentifier | None = None
    """Identifies the customer's and the reply's language; None: language not checked."""

    @classmethod
    def build(
        cls,
        settings: GenerationSettings,
        knowledge: KnowledgeBase,
        tone: ToneAnalyzer | None = None,
        embedder: Embedder | None = None,
        languages: LanguageIdentifier | None = None,
    ) -> CareKit:
        """From the service's settings; the MiniLM embedder is loaded when relevance is on.

        `tone`: the analyzer that reads replies (default: VADER and the cue lists); the
        platform's shared emotion analyzer can be passed here.
        """
        cues = ToneCues.load()
        scorer: RelevanceScorer | None = None
        if settings.relevance_check:
            scorer = RelevanceScorer(embedder or MiniLmEmbedder())
        return cls(
            tone=tone or CueToneAnalyzer(cues),
            cues=cues,
            knowledge=tuple(f"{e.title}: {e.text}" for e in knowledge.entries),
            relevance=scorer,
            relevance_threshold=settings.relevance_threshold,
            languages=languages or (default_identifier() if settings.language_check else None),
        )

    def for_turn(
        self, turn: TurnRouted, prompt: BuiltPrompt, action_results: Sequence[str] = ()
    ) -> TurnCheck:
        """The check for one turn's reply.

        `action_results`: what actions taken for this turn report (none exist yet, so no
        claim of having done something passes).
        """
        return TurnCheck(
            sources=Sources.of([*self.knowledge, *context_texts(turn)], action_results),
            message=turn.message.text,
            knowledge=tuple(f"{h.entry.title}: {h.entry.text}" for h in prompt.hits),
            tone=self.tone,
            cues=self.cues,
            customer_negative=customer_is_negative(turn, prompt.sarcastic is not None),
            match=prompt.match,
            previous_reply=previous_bot_reply(turn),
            relevance=self.relevance,
            relevance_threshold=self.relevance_threshold,
            voice=voice_for(turn, self.languages),
        )


def voice_for(turn: TurnRouted, languages: LanguageIdentifier | None) -> VoiceCheck:
    """The voice check for a turn: the customer's names, and their language (the code the
    channel gave the message, else identified from what they wrote; a profile's "Prefers
    Spanish" is a wish, and the reply follows the language they write in)."""
    profile = turn.context.profile
    names = (profile.name, profile.preferred_name) if profile is not None else ()
    return VoiceCheck.for_customer(turn.message.text, names, turn.message.language, languages)
