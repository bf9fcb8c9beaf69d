"""Learning from what customers say: preferences, facts, constraints, contacts and issues.

The rule extractor runs on every customer message with no model at all; it only learns from
first-person statements ("I prefer...", "call me...", "my new address is..."), so a question
about a product never becomes a "preference". Each memory has a *slot* naming what it is about;
memory keeps one value per slot, which is how a contradiction ("I've moved to...") updates the
old value instead of adding a second one. Issue categories come from rules first and, when no
rule fires on a clearly negative message, from the nearest of a few embedded examples.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Literal

import httpx
import numpy as np

from shared.embedding import Embedder
from shared.events import MemoryKind

log = logging.getLogger(__name__)

ProfileField = Literal["preferred_name", "name", "language"]


@dataclass(frozen=True)
class Learned:
    """A memory to keep: what it is about (slot), in words, and how sure we are."""

    kind: MemoryKind
    slot: str
    text: str
    confidence: float
    extractor: str = "rules"


@dataclass(frozen=True)
class ProfileChange:
    """A profile field the customer told us."""

    field: ProfileField
    value: str


@dataclass(frozen=True)
class IssueRaised:
    """A problem the customer reported."""

    category: str
    summary: str
    confidence: float


@dataclass(frozen=True)
class IssueResolved:
    """The customer says a problem is over; None means whichever issue is most recent."""

    category: str | None


@dataclass
class Extraction:
    """Everything one message taught us."""

    memories: list[Learned] = field(default_factory=list)
    profile: list[ProfileChange] = field(default_factory=list)
    raised: list[IssueRaised] = field(default_factory=list)
    resolved: list[IssueResolved] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.memories or self.profile or self.raised or self.resolved)


_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_END = r"(?=\s*(?:[.!?,;]|\bbut\b|\bbecause\b|\bso\b|\band (?:i|my|please|can|could)\b|$))"
_NEGATED_BEFORE = re.compile(r"\b(?:don'?t|do not|never|please don'?t|pls don'?t)\s*$", re.I)

_LANGUAGES = (
    "english|spanish|french|german|italian|portuguese|dutch|polish|arabic|hindi|urdu|"
    "bengali|chinese|mandarin|cantonese|japanese|korean|turkish|russian|ukrainian|"
    "welsh|swedish|greek|romanian|vietnamese|tagalog"
)
_NOT_NAMES = {
    "back", "later", "tomorrow", "today", "tonight", "when", "asap", "on", "at", "again",
    "please", "now", "a", "an", "the", "anytime", "any", "after", "before", "in", "if",
    "instead", "crazy", "old", "stupid", "pls", "soon", "first", "directly", "between",
}  # fmt: skip
_OCCUPATIONS = (
    "nurse|teacher|student|doctor|paramedic|carer|caregiver|pensioner|retiree|engineer|"
    "firefighter|police officer|chef|driver|farmer|developer|shift worker|small business owner"
)
_DIETS = (
    "vegetarian|vegan|pescatarian|gluten[- ]free|coeliac|celiac|lactose[- ]intolerant|"
    "diabetic|kosher|halal|dairy[- ]free"
)
_ACCESS = (
    r"blind|deaf|hard of hearing|visually impaired|partially sighted|dyslexic|"
    r"(?:a )?wheelchair user|registered blind"
)
_RELATIONS = (
    "daughter|son|wife|husband|partner|mum|mom|mother|dad|father|brother|sister|"
    "grandson|granddaughter|grandma|grandmother|grandpa|grandfather|friend|boyfriend|girlfriend"
)

_RULES_NAME = [
    (
        re.compile(r"\b(?:you can |please |just )?call me ([A-Za-z][a-z'-]{1,30})\b", re.I),
        "preferred_name",
    ),
    (re.compile(r"\bI go by ([A-Za-z][a-z'-]{1,30})\b", re.I), "preferred_name"),
    (
        re.compile(r"\bmy name is ([A-Z][a-z'-]{1,30}(?: [A-Z][a-z'-]{1,30})?)\b"),
        "name",
    ),
]
_RULE_LANGUAGE = re.compile(
    rf"\b(?:I (?:only |mainly |mostly )?speak|I(?:'d| would)? prefer (?:to (?:speak|talk|chat) )?"
    rf"(?:in )?|(?:can|could) (?:we|you) (?:speak|talk|chat|continue|write) in|"
    rf"my (?:first |native )?language is) ({_LANGUAGES})\b",
    re.I,
)
_RULE_LIKE = re.compile(
    r"\bI (?:really |absolutely |truly |do |also |much |generally |always )?"
    r"(?P<verb>love|like|prefer|adore|enjoy|am (?:a )?(?:big |huge )?fan of|'m (?:a )?(?:big |huge )?fan of|"
    r"always (?:buy|choose|go for|pick)|only (?:buy|use|wear|eat))\s+"
    rf"(?P<obj>[^.!?,;]{{2,60}}?){_END}",
    re.I,
)
_RULE_DISLIKE = re.compile(
    r"\bI (?:really |absolutely |truly |just )?"
    r"(?P<verb>hate|dislike|can'?t stand|cannot stand|don'?t like|do not like|don'?t want|"
    r"am not (?:a )?fan of|'m not (?:a )?fan of|no longer (?:like|want|buy)|"
    r"don'?t (?:like|want|buy) (?:any more|anymore))\s+"
    rf"(?P<obj>[^.!?,;]{{2,60}}?){_END}",
    re.I,
)
_CONTACT_CHANNELS = {
    "email": "email",
    "e-mail": "email",
    "text": "text message",
    "texts": "text message",
    "sms": "text message",
    "whatsapp": "WhatsApp",
    "post": "post",
    "letter": "post",
    "phone": "phone",
    "call": "phone",
    "calls": "phone",
    "phone calls": "phone",
}
_RULE_NO_CALLS = re.compile(
    r"\b(?:don'?t|do not|never|please don'?t|pls don'?t|stop)\s+(?:ever\s+)?(?:call|phone|ring)(?:ing)?\b",
    re.I,
)
_RULE_CONTACT_BY = re.compile(
    r"\b(?:(?:please |only |just )?(?:contact|reach|update) me (?:only |just )?(?:by|via|on|through|over)|"
    r"(?:please |just |only )?(?P<direct>email|e-mail|text|whatsapp) me\b|"
    r"I(?:'d| would)? prefer (?:to be contacted (?:by|via) )?)"
    r"\s*(?P<how>email|e-mail|texts?|sms|whatsapp|post|letters?|phone calls?|phone)?\b",
    re.I,
)
_RULE_NO_MARKETING = re.compile(
    r"\b(?:don'?t|do not|never|stop|no more)\s+(?:send(?:ing)?|email(?:ing)?|text(?:ing)?)?\s*(?:me\s+)?"
    r"(?:any\s+)?(?:marketing|newsletters?|promotions?|promotional|offers|spam|ads)\b",
    re.I,
)
_RULE_DIET = re.compile(rf"\bI(?:'m| am)(?: now| also)? (?:a |an )?({_DIETS})\b", re.I)
_RULE_ALLERGY = re.compile(
    rf"\bI(?:'m| am)(?: severely| very)? allergic to (?P<what>[^.!?,;]{{2,40}}?){_END}", re.I
)
_RULE_OCCUPATION = re.compile(
    rf"\bI(?:'m| am)(?: a| an) ({_OCCUPATIONS})\b|\bI work as an? ({_OCCUPATIONS})\b", re.I
)
_RULE_WORK_PATTERN = re.compile(
    r"\bI work (nights|night shifts?|nightshifts?|from home|weekends|early shifts?|late shifts?)\b",
    re.I,
)
_RULE_ACCESS = re.compile(
    rf"\bI(?:'m| am) ({_ACCESS})\b|\bI use (?:a )?(screen reader|wheelchair|hearing aids?)\b",
    re.I,
)
_RULE_BIRTHDAY = re.compile(
    rf"\bmy (?P<who>{_RELATIONS})(?:'s|s)? birthday is (?:on )?(?:the )?(?P<when>[^.!?,;]{{2,30}}?){_END}"
    rf"|\bmy birthday is (?:on )?(?:the )?(?P<self>[^.!?,;]{{2,30}}?){_END}",
    re.I,
)
_RULE_HOUSEHOLD = re.compile(
    r"\bI have (?P<n>a|an|one|two|three|four|\d) (?P<what>dogs?|cats?|babies|baby|kids|children|"
    r"sons?|daughters?|toddlers?|teenagers?|puppy|puppies|kittens?)\b",
    re.I,
)
_RULE_ADDRESS = re.compile(
    rf"\bmy (?:new |current )?(?:home |delivery |shipping |postal )?address is (?:now )?"
    rf"(?P<addr>[^!?;\n]{{5,120}}?){_END.replace(',', '')}"
    rf"|\bI(?:'ve| have)? (?:just |recently )?moved to (?P<moved>[^.!?;\n]{{3,80}}?){_END}",
    re.I,
)
_RULE_EMAIL = re.compile(
    r"\bmy (?:new |current )?e-?mail(?: address)? is (?:now )?([\w.+-]+@[\w-]+(?:\.[\w-]+)+)", re.I
)
_RULE_PHONE = re.compile(
    r"\bmy (?:new |current )?(?:phone|mobile|cell)(?: number)? is (?:now )?(\+?\d[\d ()-]{6,18}\d)",
    re.I,
)

_ISSUE_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "fraud",
        re.compile(
            r"\b(?:fraud\w*|scam(?:med)?|unauthori[sz]ed|didn'?t make (?:this|that|these)|"
            r"stolen card|card (?:was|has been) stolen|someone (?:used|hacked))\b",
            re.I,
        ),
    ),
    (
        "billing",
        re.compile(
            r"\b(?:charged (?:me )?twice|double[- ]charged|overcharged|wrong(?:ly)? charged|"
            r"charged (?:me )?(?:the )?wrong|unexpected charge|extra charge|billing (?:error|mistake|issue)|"
            r"bill is wrong|incorrect (?:bill|invoice))\b",
            re.I,
        ),
    ),
    (
        "delivery_lost",
        re.compile(
            r"\b(?:(?:parcel|package|order|delivery|item)s? (?:is |was |has been |got )?(?:lost|missing|stolen)|"
            r"(?:lost|missing) (?:parcel|package|order|delivery)|"
            r"(?:never|hasn'?t|has not|didn'?t|did not|still not|not yet) (?:arrived|turned up|come|been delivered|shown up)|"
            r"where(?:'s| is) my (?:parcel|package|order|delivery))\b",
            re.I,
        ),
    ),
    (
        "delivery_delay",
        re.compile(
            r"\b(?:(?:delivery|order|parcel|package|shipment) (?:is |was )?(?:late|delayed|overdue)|"
            r"still waiting (?:for|on) (?:my|the)|late delivery|delayed (?:delivery|order|shipment))\b",
            re.I,
        ),
    ),
    (
        "damaged_item",
        re.compile(
            r"\b(?:arrived |came |is |was )?(?:damaged|broken|cracked|smashed|faulty|defective|"
            r"doesn'?t work|stopped working|not working)\b",
            re.I,
        ),
    ),
    (
        "refund",
        re.compile(
            r"\b(?:refund|money back|reimburse\w*|still (?:haven'?t|have not) (?:been )?(?:refunded|paid back))\b",
            re.I,
        ),
    ),
    (
        "account_access",
        re.compile(
            r"\b(?:can'?t|cannot|unable to) (?:log ?in|sign in|access my account|get into my account)|"
            r"locked out|password reset (?:isn'?t|is not|doesn'?t) work",
            re.I,
        ),
    ),
    (
        "cancellation",
        re.compile(
            r"\b(?:cancel|terminate|close) my (?:subscription|account|contract|plan|membership|order)\b",
            re.I,
        ),
    ),
]
_ISSUE_PROTOTYPES: dict[str, list[str]] = {
    "delivery_lost": [
        "my parcel never arrived",
        "the courier says delivered but I have nothing",
        "my order seems to have vanished",
    ],
    "delivery_delay": [
        "my delivery is late",
        "my order is taking far too long to arrive",
        "the shipment keeps being pushed back",
    ],
    "damaged_item": [
        "the item arrived broken",
        "the product I received is faulty",
        "the screen was cracked when I opened the box",
    ],
    "refund": [
        "I want my money back",
        "I am still waiting for my refund",
        "you promised to reimburse me",
    ],
    "billing": [
        "I was charged twice",
        "there is a charge on my bill I don't recognise",
        "my invoice is wrong",
    ],
    "account_access": [
        "I can't get into my account",
        "the password reset link doesn't work",
        "my login keeps failing",
    ],
    "fraud": [
        "someone used my card without permission",
        "there are payments I did not make",
        "I think my account was hacked",
    ],
}
_RESOLVED = re.compile(
    r"\b(?:(?:it|the (?:parcel|package|order|delivery|refund)|my (?:parcel|package|order|delivery|refund))"
    r"(?: has| have)? (?:finally |now |just )?(?:arrived|came|turned up|gone through|went through|come through|been sorted)|"
    r"(?:that|this|it|everything)(?:'s| is| has been) (?:all )?(?:sorted|fixed|resolved|working (?:again|now))|"
    r"(?:problem|issue) (?:is |has been )?(?:solved|resolved|fixed|sorted)|got my refund|received (?:my|the) refund)\b",
    re.I,
)
_RESOLVED_CATEGORY = [
    ("refund", re.compile(r"\brefund\b", re.I)),
    ("delivery_lost", re.compile(r"\b(?:arrived|came|turned up|parcel|package|delivery)\b", re.I)),
]

_FILLER = re.compile(
    r"\b(?:the|a|an|some|any|all|your|my|really|very|stuff|things|items|products?|ones)\b", re.I
)
_OBJECT_STOP = re.compile(
    r"^(?:it|this|that|these|those|you|your|when|how|what|to know|to|the way|being|him|her|them|"
    r"waiting|a refund|my money|help|an answer|to speak|to talk)\b",
    re.I,
)


def _slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", _FILLER.sub(" ", text.lower()))
    return "_".join(words[:4]) or "general"


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" \t'\"")


def _sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE.split(text)) if s]


class RuleExtractor:
    """Regular-expression rules for first-person statements, plus embedded issue examples."""

    def __init__(self, embedder: Embedder | None = None, issue_threshold: float = 0.55) -> None:
        self.embedder = embedder
        self.issue_threshold = issue_threshold
        self._prototypes: list[tuple[str, np.ndarray]] = []
        if embedder is not None:
            names = [c for c, examples in _ISSUE_PROTOTYPES.items() for _ in examples]
            vectors = embedder.embed(
                [e for examples in _ISSUE_PROTOTYPES.values() for e in examples]
            )
            self._prototypes = list(zip(names, list(vectors), strict=True))

    def extract(
        self, text: str, *, sentiment: float = 0.0, vector: np.ndarray | None = None
    ) -> Extraction:
        """What this customer message teaches; `vector` is the message's embedding, if known."""
        out = Extraction()
        for sentence in _sentences(text):
            self._profile(sentence, out)
            self._constraints(sentence, out)
            self._facts(sentence, out)
            self._contacts(sentence, out)
            self._likes(sentence, out)
            self._issues(sentence, out)
        if _RESOLVED.search(text):
            category = next((c for c, rx in _RESOLVED_CATEGORY if rx.search(text)), None)
            out.resolved.append(IssueResolved(category))
        elif not out.raised and sentiment <= -0.3 and vector is not None and self._prototypes:
            best, score = max(
                ((c, float(np.dot(vector, v))) for c, v in self._prototypes), key=lambda p: p[1]
            )
            if score >= self.issue_threshold:
                out.raised.append(IssueRaised(best, _clean(text)[:240], round(score, 3)))
        return out

    def _profile(self, sentence: str, out: Extraction) -> None:
        for rx, name in _RULES_NAME:
            for m in rx.finditer(sentence):
                value = m.group(1)
                if value.lower() in _NOT_NAMES or _NEGATED_BEFORE.search(sentence[: m.start()]):
                    continue
                field_name: ProfileField = "preferred_name" if name == "preferred_name" else "name"
                out.profile.append(ProfileChange(field_name, value[:1].upper() + value[1:]))
                if field_name == "preferred_name":
                    out.memories.append(
                        Learned(
                            MemoryKind.PREFERENCE,
                            "profile:preferred_name",
                            f"Likes to be called {value[:1].upper() + value[1:]}",
                            0.95,
                        )
                    )
        if spoken := _RULE_LANGUAGE.search(sentence):
            language = spoken.group(1).capitalize()
            out.profile.append(ProfileChange("language", language))
            out.memories.append(
                Learned(MemoryKind.PREFERENCE, "profile:language", f"Prefers {language}", 0.9)
            )

    def _constraints(self, sentence: str, out: Extraction) -> None:
        no_calls = _RULE_NO_CALLS.search(sentence)
        preferred: str | None = None
        for m in _RULE_CONTACT_BY.finditer(sentence):
            how = (m.group("how") or m.group("direct") or "").lower()
            if how:
                preferred = _CONTACT_CHANNELS.get(how) or _CONTACT_CHANNELS.get(how.rstrip("s"))
            if preferred:
                break
        if preferred == "phone" and no_calls:
            preferred = None
        if no_calls and preferred:
            text = f"Prefers to be contacted by {preferred}; do not phone"
        elif no_calls:
            text = "Does not want phone calls"
        elif preferred:
            text = f"Prefers to be contacted by {preferred}"
        else:
            text = ""
        if text:
            out.memories.append(
                Learned(MemoryKind.CONSTRAINT, "constraint:contact_channel", text, 0.9)
            )
        if _RULE_NO_MARKETING.search(sentence):
            out.memories.append(
                Learned(
                    MemoryKind.CONSTRAINT,
                    "constraint:marketing",
                    "Does not want marketing or promotional messages",
                    0.9,
                )
            )

    def _facts(self, sentence: str, out: Extraction) -> None:
        if m := _RULE_DIET.search(sentence):
            diet = m.group(1).lower().replace(" ", "-")
            out.memories.append(Learned(MemoryKind.FACT, "fact:diet", f"Is {diet}", 0.9))
        for m in _RULE_ALLERGY.finditer(sentence):
            what = _clean(m.group("what"))
            out.memories.append(
                Learned(
                    MemoryKind.FACT, f"fact:allergy:{_slug(what)}", f"Is allergic to {what}", 0.9
                )
            )
        if m := _RULE_OCCUPATION.search(sentence):
            job = (m.group(1) or m.group(2)).lower()
            article = "an" if job[0] in "aeiou" else "a"
            out.memories.append(
                Learned(MemoryKind.FACT, "fact:occupation", f"Is {article} {job}", 0.8)
            )
        if m := _RULE_WORK_PATTERN.search(sentence):
            out.memories.append(
                Learned(MemoryKind.FACT, "fact:work_pattern", f"Works {m.group(1).lower()}", 0.8)
            )
        if m := _RULE_ACCESS.search(sentence):
            need = (m.group(1) or f"uses a {m.group(2)}").lower()
            text = f"Is {need}" if m.group(1) else need[:1].upper() + need[1:]
            out.memories.append(Learned(MemoryKind.FACT, f"fact:access:{_slug(need)}", text, 0.9))
        for m in _RULE_BIRTHDAY.finditer(sentence):
            if m.group("who"):
                who = m.group("who").lower()
                when = _clean(m.group("when"))
                text = f"{who.capitalize()}'s birthday is on {_ordinal(when)}"
                slot = f"fact:birthday:{who}"
            else:
                when = _clean(m.group("self"))
                text, slot = f"Birthday is on {_ordinal(when)}", "fact:birthday:self"
            out.memories.append(Learned(MemoryKind.FACT, slot, text, 0.9))
        for m in _RULE_HOUSEHOLD.finditer(sentence):
            what = m.group("what").lower()
            out.memories.append(
                Learned(
                    MemoryKind.FACT,
                    f"fact:household:{what.rstrip('s')}",
                    f"Has {m.group('n').lower()} {what}",
                    0.8,
                )
            )

    def _contacts(self, sentence: str, out: Extraction) -> None:
        if m := _RULE_ADDRESS.search(sentence):
            if m.group("addr"):
                text = f"Address: {_clean(m.group('addr')).rstrip('.')}"
            else:
                text = f"Lives in {_clean(m.group('moved'))}"
            out.memories.append(Learned(MemoryKind.CONTACT, "contact:address", text, 0.9))
        if m := _RULE_EMAIL.search(sentence):
            out.memories.append(
                Learned(MemoryKind.CONTACT, "contact:email", f"Email: {m.group(1)}", 0.95)
            )
        if m := _RULE_PHONE.search(sentence):
            out.memories.append(
                Learned(MemoryKind.CONTACT, "contact:phone", f"Phone: {_clean(m.group(1))}", 0.95)
            )

    def _likes(self, sentence: str, out: Extraction) -> None:
        taken = {m.slot for m in out.memories}
        for rx, positive in ((_RULE_DISLIKE, False), (_RULE_LIKE, True)):
            for m in rx.finditer(sentence):
                obj = _clean(m.group("obj"))
                if _OBJECT_STOP.match(obj) or obj.lower() in _CONTACT_CHANNELS:
                    continue
                if positive and _NEGATED_BEFORE.search(sentence[: m.start("verb")]):
                    continue
                slot = f"preference:{_slug(obj)}"
                if slot in taken:
                    continue
                taken.add(slot)
                verb = m.group("verb").lower()
                if not positive:
                    text = f"Dislikes {obj}"
                elif verb.startswith(("prefer", "always", "only")):
                    text = f"Prefers {obj}"
                else:
                    text = f"Likes {obj}"
                out.memories.append(Learned(MemoryKind.PREFERENCE, slot, text, 0.85))

    def _issues(self, sentence: str, out: Extraction) -> None:
        if _RESOLVED.search(sentence):
            return
        seen = {r.category for r in out.raised}
        for category, rx in _ISSUE_RULES:
            if category not in seen and rx.search(sentence):
                out.raised.append(IssueRaised(category, _clean(sentence)[:240], 0.9))
                return


def _ordinal(when: str) -> str:
    """'12th' -> 'the 12th'; 'March 3' stays as it is."""
    return f"the {when}" if re.match(r"^\d{1,2}(?:st|nd|rd|th)\b", when) else when


_LLM_PROMPT = """Extract durable facts about the customer from their message.
Reply with JSON only: {"memories": [{"kind": "preference|fact|constraint|contact",
"slot": "short_snake_case_topic", "text": "third-person statement"}]}.
Only include what the customer states about themselves; return {"memories": []} otherwise."""


class LlmExtractor:
    """Asks an OpenAI-compatible LLM for memories the rules missed (off unless configured)."""

    def __init__(self, client: httpx.AsyncClient, model: str, timeout_s: float = 5.0) -> None:
        self.client = client
        self.model = model
        self.timeout_s = timeout_s

    async def extract(self, text: str) -> list[Learned]:
        """Memories the LLM found; nothing (never an error) when its answer is unusable."""
        try:
            response = await self.client.post(
                "chat/completions",
                json={
                    "model": self.model,
                    "temperature": 0,
                    "max_tokens": 200,
                    "messages": [
                        {"role": "system", "content": _LLM_PROMPT},
                        {"role": "user", "content": json.dumps({"customer_message": text})},
                    ],
                },
                timeout=self.timeout_s,
            )
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            log.warning("LLM extractor unavailable: %s", exc)
            return []
        return parse_llm_memories(content)


def parse_llm_memories(content: str) -> list[Learned]:
    """Validate an LLM's JSON answer into memories, dropping anything malformed."""
    match = re.search(r"\{.*\}", content, re.S)
    if match is None:
        return []
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return []
    items = data.get("memories") if isinstance(data, dict) else None
    learned: list[Learned] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind, slot, text = item.get("kind"), item.get("slot"), item.get("text")
        if kind not in {k.value for k in MemoryKind} or not isinstance(text, str):
            continue
        if not isinstance(slot, str) or not text.strip() or len(text) > 200:
            continue
        learned.append(
            Learned(MemoryKind(kind), f"{kind}:{_slug(slot)}", _clean(text), 0.6, extractor="llm")
        )
    return learned
