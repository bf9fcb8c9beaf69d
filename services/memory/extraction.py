"""Learning from what customers say: preferences, facts, constraints, contacts and issues.

The rule extractor runs on every customer message with no model at all; it only learns from
first-person statements ("I prefer...", "call me...", "my new address is..."), so a question
about a product never becomes a "preference". Each memory has a *slot* naming what it is about;
memory keeps one value per slot, which is how a contradiction ("I've moved to...") updates the
old value instead of adding a second one. Issue categories come from rules first and, when no
rule fires, from an embedding classifier trained on labelled messages (`issue_model`).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from services.memory.issue_model import IssueModel
from services.memory.terms import ExtractionTerms, load_terms
from shared.embedding import Embedder
from shared.events import MemoryKind
from shared.linear_re import LinearMatch, LinearPattern, PatternSet, compile_linear, escape
from shared.llm import ChatClient, ChatMessage, LLMUnavailable
from shared.untrusted import looks_like_instruction, normalize, overrides_instructions

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
    extractor: str = "rules"


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
    refused: int = 0
    """Memories not kept because their text had the wrong shape (instructions, markup)."""

    def __bool__(self) -> bool:
        return bool(self.memories or self.profile or self.raised or self.resolved)


# Every pattern here runs on customer text, so each is RE2 (linear time, see shared/linear_re):
# no look-around. A rule's object ends at `_END`, which the match consumes (RE2 has no
# look-ahead), so a rule that can match twice in a sentence ("I like tea and I love coffee")
# is scanned by `_scan`, each search starting where the previous object ended.
# The one stdlib pattern: a fixed-width look-behind and single-class runs, which `re` runs in
# linear time too (no run can be split two ways), and `re.split` returns thousands of pieces
# without RE2's per-match cost from Python. The adversarial tests cover it like the rest.
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+")
_END_WORDS = r"\bbut\b|\bbecause\b|\bso\b|\band (?:i|my|please|can|could)\b|$"
_END = rf"\s*(?:[.!?,;]|{_END_WORDS})"
_END_NO_COMMA = rf"\s*(?:[.!?;]|{_END_WORDS})"
_NEGATED_BEFORE = compile_linear(
    r"\b(?:don'?t|do not|never|please don'?t|pls don'?t)$", ignore_case=True
)


def _alternatives(terms: Iterable[str]) -> str:
    """A term list as a pattern alternation; longest first so "phone calls" beats "phone"."""
    return "|".join(escape(t) for t in sorted(set(terms), key=lambda t: (-len(t), t)))


def _flexible(terms: Iterable[str]) -> str:
    """Like `_alternatives`, but a space or hyphen in a term matches either ("gluten free")."""
    spellings = {t.replace("-", " ") for t in terms}
    return "|".join(
        "[- ]".join(escape(word) for word in t.split())
        for t in sorted(spellings, key=lambda t: (-len(t), t))
    )


class _TermRules:
    """The patterns built from the word lists (services/memory/data/extraction_terms.yaml)."""

    def __init__(self, terms: ExtractionTerms) -> None:
        self.terms = terms
        self.not_names = frozenset(terms.not_names)
        self.contact_channels = dict(terms.contact_channels)
        self.language = compile_linear(
            r"\b(?:I (?:only |mainly |mostly )?speak|I(?:'d| would)? prefer (?:to (?:speak|talk|chat) )?"
            r"(?:in )?|(?:can|could) (?:we|you) (?:speak|talk|chat|continue|write) in|"
            rf"my (?:first |native )?language is) ({_alternatives(terms.languages)})\b",
            ignore_case=True,
        )
        self.diet = compile_linear(
            rf"\bI(?:'m| am)(?: now| also)? (?:a |an )?({_flexible(terms.diets)})\b",
            ignore_case=True,
        )
        self.occupation = compile_linear(
            rf"\bI(?:'m| am)(?: a| an) ({_alternatives(terms.occupations)})\b"
            rf"|\bI work as an? ({_alternatives(terms.occupations)})\b",
            ignore_case=True,
        )
        self.access = compile_linear(
            rf"\bI(?:'m| am) ({_alternatives(terms.access_needs)})\b"
            rf"|\bI use (?:a )?({_alternatives(terms.assistive_devices)})\b",
            ignore_case=True,
        )
        self.birthday = compile_linear(
            rf"\bmy (?:(?P<who>{_alternatives(terms.relations)})(?:'s|s)? )?birthday is (?:on )?"
            rf"(?:the )?(?P<when>[^.!?,;]{{2,30}}?){_END}",
            ignore_case=True,
        )
        self.household = compile_linear(
            r"\bI have (?P<n>a|an|one|two|three|four|\d) "
            rf"(?P<what>{_alternatives(terms.household)})\b",
            ignore_case=True,
        )

    def patterns(self) -> list[LinearPattern]:
        """Every pattern built from the terms."""
        return [
            self.language,
            self.diet,
            self.occupation,
            self.access,
            self.birthday,
            self.household,
        ]


_RULES_NAME = [
    (
        compile_linear(
            r"\b(?:you can |please |just )?call me ([A-Za-z][a-z'-]{1,30})\b", ignore_case=True
        ),
        "preferred_name",
    ),
    (compile_linear(r"\bI go by ([A-Za-z][a-z'-]{1,30})\b", ignore_case=True), "preferred_name"),
    (
        compile_linear(r"\bmy name is ([A-Z][a-z'-]{1,30}(?: [A-Z][a-z'-]{1,30})?)\b"),
        "name",
    ),
]
_RULE_LIKE = compile_linear(
    r"\bI (?:really |absolutely |truly |do |also |much |generally |always )?"
    r"(?P<verb>love|like|prefer|adore|enjoy|am (?:a )?(?:big |huge )?fan of|'m (?:a )?(?:big |huge )?fan of|"
    r"always (?:buy|choose|go for|pick)|only (?:buy|use|wear|eat))\s+"
    rf"(?P<obj>[^.!?,;]{{2,60}}?){_END}",
    ignore_case=True,
)
_RULE_DISLIKE = compile_linear(
    r"\bI (?:really |absolutely |truly |just )?"
    r"(?P<verb>hate|dislike|can'?t stand|cannot stand|don'?t like|do not like|don'?t want|"
    r"am not (?:a )?fan of|'m not (?:a )?fan of|no longer (?:like|want|buy)|"
    r"don'?t (?:like|want|buy) (?:any more|anymore))\s+"
    rf"(?P<obj>[^.!?,;]{{2,60}}?){_END}",
    ignore_case=True,
)
_RULE_NO_CALLS = compile_linear(
    r"\b(?:don'?t|do not|never|please don'?t|pls don'?t|stop)\s+(?:ever\s+)?(?:call|phone|ring)(?:ing)?\b",
    ignore_case=True,
)
_RULE_CONTACT_BY = compile_linear(
    r"\b(?:(?:please |only |just )?(?:contact|reach|update) me (?:only |just )?(?:by|via|on|through|over)|"
    r"(?:please |just |only )?(?P<direct>email|e-mail|text|whatsapp) me\b|"
    r"I(?:'d| would)? prefer (?:to be contacted (?:by|via) )?)"
    r"\s*(?P<how>email|e-mail|texts?|sms|whatsapp|post|letters?|phone calls?|phone)?\b",
    ignore_case=True,
)
# The verb and "me" each own their trailing spaces, so a run of spaces is read one way only
# (before, `\s+(?:verb)?\s*` could split a run of n spaces n ways: quadratic under `re`).
_RULE_NO_MARKETING = compile_linear(
    r"\b(?:don'?t|do not|never|stop|no more)\s+(?:(?:send(?:ing)?|email(?:ing)?|text(?:ing)?)\s+)?"
    r"(?:me\s+)?(?:any\s+)?(?:marketing|newsletters?|promotions?|promotional|offers|spam|ads)\b",
    ignore_case=True,
)
_RULE_ALLERGY = compile_linear(
    rf"\bI(?:'m| am)(?: severely| very)? allergic to (?P<what>[^.!?,;]{{2,40}}?){_END}",
    ignore_case=True,
)
_RULE_WORK_PATTERN = compile_linear(
    r"\bI work (nights|night shifts?|nightshifts?|from home|weekends|early shifts?|late shifts?)\b",
    ignore_case=True,
)
_RULE_ADDRESS = compile_linear(
    r"\bmy (?:new |current )?(?:home |delivery |shipping |postal )?address is (?:now )?"
    rf"(?P<addr>[^!?;\n]{{5,120}}?){_END_NO_COMMA}"
    rf"|\bI(?:'ve| have)? (?:just |recently )?moved to (?P<moved>[^.!?;\n]{{3,80}}?){_END}",
    ignore_case=True,
)
_RULE_EMAIL = compile_linear(
    r"\bmy (?:new |current )?e-?mail(?: address)? is (?:now )?([\w.+-]+@[\w-]+(?:\.[\w-]+)+)",
    ignore_case=True,
)
_RULE_PHONE = compile_linear(
    r"\bmy (?:new |current )?(?:phone|mobile|cell)(?: number)? is (?:now )?(\+?\d[\d ()-]{6,18}\d)",
    ignore_case=True,
)

# What breaks, goes down or gets booked, for the rules below (RE2 alternations).
_APPLIANCE = (
    r"(?:washing machine|washer|dishwasher|fridge(?: freezer)?|freezer|boiler|oven|cooker|hob|"
    r"dryer|tumble dryer|heating|heater|radiator|air ?con\w*|microwave|tv|television|laptop|"
    r"computer|phone|screen|car|bike|van|printer|kettle|watch|camera|shower|toilet|roof|"
    r"window|door|lock|lift|elevator|machine|appliance|router)"
)
_VISITOR = (
    r"(?:technician|engineer|installer|plumber|electrician|fitter|repair ?man|repairer|"
    r"handyman|surveyor|assessor|inspector|meter reader|driver|courier|contractor|builder|"
    r"mechanic|somebody|someone|anybody|anyone)"
)
_UTILITY = (
    r"(?:internet|broadband|wi-?fi|connection|network|signal|service|power|electricity|"
    r"electric|gas|water|heating|tv service|phone line|landline|line|app|website|site|"
    r"server|mobile data|data|fibre|cable|4g|5g|email|online banking)"
)
_BOOKED = (
    r"(?:booking|reservation|flight|hotel|room|table|tickets?|seat|holiday|trip|cruise|"
    r"car hire|rental|train)"
)

_ISSUE_RULES: list[tuple[str, LinearPattern]] = [
    (
        "claim",
        compile_linear(
            r"\b(?:my |our |the )?(?:insurance |compensation |flood |damage )?claim\b[^.!?]{0,40}\b"
            r"(?:rejected|denied|refused|declined|ignored|still pending|pending|stuck|no update|"
            r"hasn'?t been|not been)|"
            r"\babout my claim\b",
            ignore_case=True,
        ),
    ),
    (
        "warranty",
        compile_linear(
            r"\b(?:warranty|guarantee)\b[^.!?]{0,40}\b(?:refus\w*|reject\w*|denied|den(?:y|ies)|"
            r"won'?t|doesn'?t cover|does not cover|not cover\w*|isn'?t covered|void\w*|expired|"
            r"charge me|unrepaired)|"
            r"\b(?:refused|rejected|denied) (?:my |the )?(?:warranty|guarantee)|"
            r"\b(?:won'?t|wouldn'?t|refuse to|refused to|didn'?t|will not) (?:honou?r|cover|accept) "
            r"(?:the |my )?(?:warranty|guarantee)|"
            r"\b(?:under|in) (?:warranty|guarantee)\b[^.!?]{0,40}\b(?:charge|pay|refus|won'?t)",
            ignore_case=True,
        ),
    ),
    (
        "repair",
        compile_linear(
            # A repair that did not happen or did not work, or something broken down.
            r"\b(?:repair|repairs|fix|service)\b[^.!?]{0,40}\b(?:was supposed|were supposed|"
            r"was meant|were meant|should have|hasn'?t|has not|didn'?t|did not|still (?:not|isn'?t)|"
            r"never|failed|not (?:been )?(?:done|fixed|finished|ready)|isn'?t (?:done|ready|finished)|"
            r"cancell?ed|postponed|delayed|taken|took)|"
            r"\b(?:fixed nothing|still (?:broken|not fixed|isn'?t fixed|faulty)|"
            r"(?:broke|broken) (?:down )?again|not (?:been )?repaired|returned it unrepaired|"
            r"unrepaired|at (?:your|the) repair (?:centre|center|shop)|"
            r"still (?:makes?|making|has|having|gets?|getting) the same "
            r"(?:noise|problem|fault|issue|error))\b|"
            rf"\b{_APPLIANCE}\b[^.!?]{{0,40}}\b(?:broke down|broken down|is broken|has broken|"
            r"(?:is |was |has been |keeps )?leaking|won'?t (?:start|turn on|work|spin|drain|heat|"
            r"charge|close|open|cool|flush)|(?:still )?(?:won'?t|doesn'?t|does not|isn'?t|is not) "
            r"(?:working|work|heating|cooling|spinning|draining)|stopped working|makes? the same noise)",
            ignore_case=True,
        ),
    ),
    (
        "appointment",
        compile_linear(
            # A visit that did not happen: "no technician came", "the engineer never turned up".
            rf"\b(?:no|nobody|no one|no-one|no {_VISITOR}) (?:has |ever )?"
            r"(?:came|come|showed up|show up|turned up|turn up|arrived|called|rang|attended)\b|"
            rf"\b{_VISITOR}s?\b[^.!?]{{0,40}}\b(?:didn'?t|did not|never|hasn'?t|has not|"
            r"failed to|still hasn'?t|won'?t|wasn'?t able to) (?:come|came|turn(?:ed)? up|"
            r"show(?:ed)? up|arrive|arrived|attend|call|called|ring|rang|make it)\b|"
            rf"\b{_VISITOR}s? (?:was|were) (?:a )?no[- ]show|\bno[- ]show\b|"
            r"\b(?:cancell?ed|missed|moved|rescheduled) (?:my |our |the )?(?:appointment|visit|"
            r"slot|installation|engineer visit|service visit)(?: again)?\b|"
            r"\b(?:appointment|visit|installation|slot)\b[^.!?]{0,40}\b(?:never happened|"
            r"didn'?t happen|did not happen|was cancell?ed|got cancell?ed|was missed|"
            r"no[- ]one came|nobody came)|"
            rf"\b{_VISITOR}s?\b[^.!?]{{0,30}}\b(?:hours? late|late again|left without)",
            ignore_case=True,
        ),
    ),
    (
        "outage",
        compile_linear(
            rf"\b{_UTILITY}\b[^.!?]{{0,25}}\b(?:is |has been |was |keeps |keep |went |goes |"
            r"been |are |have been )?(?:down|out|off|dead|cut off|cutting out|dropping|dropped|"
            r"disconnected|not working|isn'?t working|stopped working|doesn'?t work|gone|lost|"
            r"unavailable|crashing|failing)\b|"
            rf"\b(?:no|lost|losing|lost all|without) {_UTILITY}\b|"
            r"\b(?:outage|outages|power cut|power failure|blackout|network failure|"
            r"service (?:is )?down|calls (?:just )?fail)\b",
            ignore_case=True,
        ),
    ),
    (
        "booking",
        compile_linear(
            rf"\b{_BOOKED}\b[^.!?]{{0,40}}\b(?:was |were |got |has been |have been )?"
            r"(?:cancell?ed|changed|moved|lost|missing|disappeared|double[- ]booked|overbooked|"
            r"given away|not (?:showing|confirmed|there|found)|to the wrong)|"
            rf"\b(?:cancell?ed|lost|changed|gave away|given away) (?:my|our) {_BOOKED}\b|"
            rf"\b(?:no record of|can'?t find|cannot find|have no) (?:my |our |the |a )?{_BOOKED}|"
            r"\b(?:double[- ]booked|overbooked)\b|"
            r"\b(?:had|have|has) no (?:booking|reservation|record) (?:for|of)\b|"
            rf"\b{_BOOKED}\b[^.!?]{{0,30}}\b(?:gave|given|giving) away\b|"
            r"\b(?:gave|given|giving|let) (?:away )?(?:our|my) \w+ (?:away|to (?:someone|somebody) else)\b|"
            r"\bpaid for an? \w+ (?:room|seat|table)\b[^.!?]{0,30}\bonly\b",
            ignore_case=True,
        ),
    ),
    (
        "subscription",
        compile_linear(
            r"\b(?:still |keep |keeps |kept )?(?:charg|bill|tak)\w* (?:me |money |payments )?"
            r"(?:again |every month )?(?:for|after|even though)[^.!?]{0,40}\b(?:cancel\w*|unsubscri\w*|"
            r"free trial|trial)|"
            r"\b(?:subscription|membership|plan|trial|renewal)\b[^.!?]{0,40}\b(?:auto-?renewed|"
            r"renewed|still (?:active|taking|charging)|won'?t cancel|never signed up|"
            r"old price|wrong plan)|"
            r"\b(?:auto-?renewed|never signed up for)\b|"
            r"\b(?:can'?t|cannot|unable to|won'?t let me) (?:cancel|unsubscribe|end|stop) "
            r"(?:my |the |this )?(?:subscription|membership|plan|trial|account)|"
            r"\b(?:billed|charged) for (?:the )?(?:annual|yearly|monthly|premium|wrong) (?:plan|subscription)|"
            r"\b(?:downgraded|cancell?ed|unsubscribed)\b[^.!?]{0,40}\b(?:still (?:paying|charged|being charged)|"
            r"charged|taking payments)",
            ignore_case=True,
        ),
    ),
    (
        "wrong_item",
        compile_linear(
            r"\b(?:sent|received|got|delivered|given|had|contained)(?: me| us)? (?:the |a |an |only half of my order and the )?"
            r"(?:wrong|incorrect) (?:\w+ )?(?:item|size|colou?r|model|product|order|parcel|charger|"
            r"part|book|shoes?|sofa|one|thing|version)|"
            r"\b(?:isn'?t|is not|wasn'?t|not) what I ordered\b|"
            r"\b(?:wrong|incorrect) (?:colou?r|size|model) \w+|"
            r"\bsomeone else'?s (?:order|parcel|package)|"
            r"\bI ordered an? [^.!?]{1,30} and (?:you sent|I got|I received|got)|"
            r"\binstead of the\b",
            ignore_case=True,
        ),
    ),
    (
        "fraud",
        compile_linear(
            r"\b(?:fraud\w*|scam(?:med)?|unauthori[sz]ed|didn'?t make (?:this|that|these)|"
            r"stolen card|card (?:was|has been) stolen|someone (?:used|hacked))\b|"
            r"\b(?:payments?|transactions?|charges?|purchases?|withdrawals?)\b[^.!?]{0,30}\b"
            r"(?:I|we) (?:didn'?t|did not|never|don'?t|do not) (?:make|authori[sz]e|recogni[sz]e)|"
            r"\b(?:payments?|transactions?|charges?|purchases?|withdrawals?)\b[^.!?]{0,40}\b"
            r"(?:weren'?t|wasn'?t|were not|was not|not) (?:me|mine|made by me)\b",
            ignore_case=True,
        ),
    ),
    (
        "billing",
        compile_linear(
            r"\b(?:charged (?:me )?twice|double[- ]charged|overcharged|wrong(?:ly)? charged|"
            r"charged (?:me )?(?:the )?wrong|unexpected charge|extra charge|billing (?:error|mistake|issue)|"
            r"bill is wrong|incorrect (?:bill|invoice))\b|"
            r"\bwhy (?:have|has|was|were|am|is) (?:I|we|my \w+) (?:been |being )?(?:billed|charged)\b|"
            r"\b(?:direct debit|payment|standing order|instalment)s?\b[^.!?]{0,20}\b(?:went out|"
            r"taken|came out|debited|charged)\b[^.!?]{0,20}\b(?:twice|two times|again|double)\b",
            ignore_case=True,
        ),
    ),
    (
        "delivery_lost",
        compile_linear(
            r"\b(?:(?:parcel|package|order|delivery|item)s? (?:is |was |has been |got )?(?:lost|missing|stolen)|"
            r"(?:lost|missing) (?:parcel|package|order|delivery)|"
            r"(?:never|hasn'?t|has not|didn'?t|did not|still not|not yet) (?:arrived|turned up|come|been delivered|shown up)|"
            r"where(?:'s| is) my (?:parcel|package|order|delivery)|"
            r"(?:parcel|package|order|delivery|item)s? (?:has |have |seems to have )?"
            r"(?:vanished|disappeared|gone missing)|"
            r"(?:says|shows|showing|marked as|status (?:is|says)) (?:it was |it's |as )?delivered\b"
            r"[^.!?]{0,40}\b(?:but|not|never|nothing)|"
            r"tracking (?:hasn'?t|has not|didn'?t|did not) (?:updated|moved|changed))\b",
            ignore_case=True,
        ),
    ),
    (
        "delivery_delay",
        compile_linear(
            r"\b(?:(?:delivery|order|parcel|package|shipment) (?:is |was )?(?:late|delayed|overdue)|"
            r"still waiting (?:for|on) (?:my|the)|late delivery|delayed (?:delivery|order|shipment)|"
            r"stuck (?:in transit|at (?:the )?(?:depot|customs|warehouse|sorting (?:centre|center)))|"
            r"(?:delivery|order|parcel|package|shipment)s? (?:is |was |are |has been )?(?:now )?"
            r"(?:a|one|two|three|four|five|six|\d+|several|a few) (?:days?|weeks?|months?) "
            r"(?:late|overdue|delayed)|"
            r"(?:delivery|order|parcel|package|shipment)\b[^.!?]{0,30}\b(?:rescheduled|postponed|"
            r"pushed back)|"
            r"(?:keeps|kept) (?:getting |being )?(?:pushed back|delayed|rescheduled|postponed))\b",
            ignore_case=True,
        ),
    ),
    (
        "damaged_item",
        compile_linear(
            r"\b(?:arrived |came |is |was )?(?:damaged|broken|cracked|smashed|faulty|defective|chipped|"
            r"dented|ripped|torn|stained|ruined|"
            r"doesn'?t work|stopped working|not working)\b",
            ignore_case=True,
        ),
    ),
    (
        "refund",
        compile_linear(
            r"\b(?:refund|money back|reimburse\w*|still (?:haven'?t|have not) (?:been )?(?:refunded|paid back))\b",
            ignore_case=True,
        ),
    ),
    (
        "account_access",
        compile_linear(
            r"\b(?:can'?t|cannot|unable to) (?:log ?in|sign in|access my account|get into my account)|"
            r"locked out|password reset (?:isn'?t|is not|doesn'?t) work|"
            r"\bwon'?t let me (?:log ?in|sign in|access|get into)|"
            r"\b(?:log ?in|login|sign in|sign-in) (?:doesn'?t|does not|isn'?t|won'?t|keeps) "
            r"(?:work|failing|fail)|"
            r"\b(?:an? )?error (?:when|while|every time) (?:I )?(?:try to )?(?:log|sign)",
            ignore_case=True,
        ),
    ),
    (
        "cancellation",
        compile_linear(
            r"\b(?:cancel|terminate|close) my (?:subscription|account|contract|plan|membership|order)\b",
            ignore_case=True,
        ),
    ),
]
# A question asking for information ("Does the warranty cover accidental damage?", "Is the
# outage resolved now?") mentions a problem without reporting one. "Why..." and "Where is my..."
# are left out: "Why was I charged twice?" and "Where is my parcel?" are complaints.
_INFO_QUESTION = compile_linear(
    r"^(?:does|do|did|can|could|would|will|is|are|was|were|which|should|may|shall|who|"
    r"what(?:'s| is| are| does| do| time| happens)|how (?:do|does|did|can|much|long|many|often|to|would|"
    r"should|is|are))\b[^.!?]*\?$",
    ignore_case=True,
)
# A message that opens by thanking ("Thanks for letting me know about the delay") answers news
# more often than it reports a problem; the classifier must then be surer.
_THANKS = compile_linear(r"^\W*(?:thanks|thank you|many thanks|cheers)\b", ignore_case=True)
_RESOLVED = compile_linear(
    r"\b(?:(?:it|the (?:parcel|package|order|delivery|refund)|my (?:parcel|package|order|delivery|refund))"
    r"(?: has| have)? (?:finally |now |just )?(?:arrived|came|turned up|gone through|went through|come through|been sorted)|"
    r"(?:that|this|it|everything)(?:'s| is| has been) (?:all )?(?:sorted|fixed|resolved|working (?:again|now))|"
    r"(?:problem|issue) (?:is |has been )?(?:solved|resolved|fixed|sorted)|got my refund|received (?:my|the) refund|"
    rf"{_UTILITY}(?:'s| is| has| has been| came| come)? (?:all )?(?:back on|back up|working again|"
    r"working now|restored|fixed)|"
    r"(?:repair|repaired|fix) (?:went well|worked|is done|was done)|runs perfectly now)\b",
    ignore_case=True,
)
_RESOLVED_CATEGORY = [
    ("refund", compile_linear(r"\brefund\b", ignore_case=True)),
    ("outage", compile_linear(rf"\b{_UTILITY}\b", ignore_case=True)),
    ("repair", compile_linear(r"\b(?:repair\w*|fix\w*|engineer|technician)\b", ignore_case=True)),
    (
        "delivery_lost",
        compile_linear(r"\b(?:arrived|came|turned up|parcel|package|delivery)\b", ignore_case=True),
    ),
]

# Helpers below see only what a rule already captured (at most 120 characters) or are a single
# character class, so `re` is linear on them too and saves RE2's per-call cost from Python.
_FILLER = re.compile(
    r"\b(?:the|a|an|some|any|all|your|my|really|very|stuff|things|items|products?|ones)\b",
    re.I,
)
_OBJECT_STOP = re.compile(
    r"^(?:it|this|that|these|those|you|your|when|how|what|to know|to|the way|being|him|her|them|"
    r"waiting|a refund|my money|help|an answer|to speak|to talk)\b",
    re.I,
)
_WORD = re.compile(r"[a-z0-9]+")
_SPACES = re.compile(r"\s+")
_ORDINAL = re.compile(r"\d{1,2}(?:st|nd|rd|th)\b")


def _slug(text: str) -> str:
    words = _WORD.findall(_FILLER.sub(" ", text.lower()))
    return "_".join(words[:4]) or "general"


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip(" \t'\"")


# What an address or a place looks like: letters of any script, digits and the punctuation
# addresses use, a dozen words at most, and (unless it is a short place name) a number.
_ADDRESS_SHAPE = compile_linear(
    r"(?:[\pL\pN][\pL\pN.'&/#()-]*,?)(?: [\pL\pN][\pL\pN.'&/#()-]*,?){0,11}"
)
_PLACE_SHAPE = compile_linear(r"(?:\pL[\pL.'-]*,?)(?: \pL[\pL.'-]*,?){0,5}")


def _summary(category: str, text: str) -> str:
    """The customer's words as the issue's summary, unless they try to instruct the assistant:
    then only the category, which is all a later prompt needs."""
    words = _clean(normalize(text))[:240]
    if overrides_instructions(words):
        return f"Reported a {category.replace('_', ' ')} problem"
    return words


def _sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_SPLIT.split(text)) if s]


def _negated(before: str) -> bool:
    """Whether the words just before a statement negate it ("don't call me Bob")."""
    # Only the last few words matter, so only they are searched, however long the sentence.
    return _NEGATED_BEFORE.search(before.rstrip()[-_NEGATION_SPAN:]) is not None


_HAPPY = 0.5
"""Sentiment from which a message no rule reads as an issue is not read as one by meaning."""
GATED_THRESHOLD = 0.9
"""Probability a happy message or a message of information questions needs to be an issue."""
_NEGATION_SPAN = 24
_SHORTEST_STATEMENT = 4
"""No rule matches fewer characters ("scam"), so shorter sentences are not even looked at."""
MAX_STATEMENT_SENTENCES = 32
"""Sentences in which some rule matched that one message is read for; a message saying more
than this is not a customer talking about themselves, and the cap bounds its cost."""
MAX_MATCHES_PER_RULE = 8
"""A message that states the same kind of thing more often than this is not a customer
talking: the rest is ignored, which also bounds the work one message can cause."""


class _Sentence:
    """One sentence and the rules that can match it (one RE2::Set pass decides)."""

    __slots__ = ("hits", "text")

    def __init__(self, text: str, hits: frozenset[LinearPattern]) -> None:
        self.text = text
        self.hits = hits

    def search(self, rx: LinearPattern) -> LinearMatch | None:
        return rx.search(self.text) if rx in self.hits else None

    def finditer(self, rx: LinearPattern) -> Iterator[LinearMatch]:
        if rx in self.hits:
            yield from itertools.islice(rx.finditer(self.text), MAX_MATCHES_PER_RULE)

    def scan(self, rx: LinearPattern, group: str) -> Iterator[LinearMatch]:
        """Every match, each search starting where the previous one's `group` ended, so the
        words that closed one object ("and I ...") can open the next statement."""
        if rx not in self.hits:
            return
        pos = 0
        for _ in range(MAX_MATCHES_PER_RULE):
            m = rx.search(self.text, pos) if pos <= len(self.text) else None
            if m is None:
                return
            yield m
            pos = max(m.end(group), m.start() + 1)


class RuleExtractor:
    """Regular-expression rules for first-person statements, plus embedded issue examples."""

    def __init__(
        self,
        embedder: Embedder | None = None,
        terms: ExtractionTerms | None = None,
        issue_model: IssueModel | None = None,
    ) -> None:
        """Compile the rules; with an embedder, also load the issue model (or fit it on the own
        set, about a second, when the terms file's examples differ from the shipped ones)."""
        self.embedder = embedder
        self.terms = terms or load_terms()
        self._rules = _TermRules(self.terms)
        self._gate = PatternSet(
            [rx for rx, _ in _RULES_NAME]
            + [rx for _, rx in _ISSUE_RULES]
            + self._rules.patterns()
            + [_RULE_LIKE, _RULE_DISLIKE, _RULE_NO_CALLS, _RULE_CONTACT_BY, _RULE_NO_MARKETING]
            + [_RULE_ALLERGY, _RULE_WORK_PATTERN, _RULE_ADDRESS, _RULE_EMAIL, _RULE_PHONE]
            + [_RESOLVED]
        )
        if issue_model is None and embedder is not None:
            issue_model = IssueModel.shipped(embedder, self.terms.issue_examples)
        self.issue_model = issue_model

    def extract(
        self, text: str, *, sentiment: float = 0.0, vector: np.ndarray | None = None
    ) -> Extraction:
        """What this customer message teaches; `vector` is the message's embedding, if known."""
        out = Extraction()
        interpreted = 0
        for sentence_text in _sentences(text):
            # One space between words: the rules are written that way, and a run of thousands
            # of spaces inside a match would make RE2's group extraction walk it.
            piece = " ".join(sentence_text.split())
            if len(piece) < _SHORTEST_STATEMENT:
                continue
            sentence = _Sentence(piece, self._gate.matching(piece))
            if not sentence.hits:
                continue
            interpreted += 1
            if interpreted > MAX_STATEMENT_SENTENCES:
                break
            self._profile(sentence, out)
            self._constraints(sentence, out)
            self._facts(sentence, out)
            self._contacts(sentence, out)
            self._likes(sentence, out)
            self._issues(sentence, out)
        if _RESOLVED.search(text):
            category = next((c for c, rx in _RESOLVED_CATEGORY if rx.search(text)), None)
            out.resolved.append(IssueResolved(category))
        elif (
            not out.raised
            and not out.memories
            and not out.profile
            and vector is not None
            and self.issue_model is not None
        ):
            # A message the rules read as something about the customer ("I'm vegetarian") is
            # not also a problem by its meaning; a problem stated by a rule still counts.
            self._issue_by_meaning(text, sentiment, vector, out)
        kept = [m for m in out.memories if not looks_like_instruction(m.text)]
        out.refused += len(out.memories) - len(kept)
        out.memories = kept
        return out

    def _issue_by_meaning(
        self, text: str, sentiment: float, vector: np.ndarray, out: Extraction
    ) -> None:
        """An issue no rule names, read from the message's embedding."""
        assert self.issue_model is not None
        # A clearly happy message or one made only of questions asking for information
        # ("Does the warranty cover accidental damage?") mostly mentions problems without
        # having one, but customers also ask about their problem ("What do I do if my card is
        # not working?") and say "please help" to VADER's delight: such a message counts only
        # when the model is much surer (public dev split, datasheet).
        threshold = self.issue_model.threshold
        if (
            sentiment >= _HAPPY
            or _THANKS.search(text)
            or all(_INFO_QUESTION.search(s) for s in _sentences(text))
        ):
            threshold = max(threshold, GATED_THRESHOLD)
        probability = self.issue_model.probability(vector)
        if probability < threshold:
            return
        category, _ = self.issue_model.category(vector)
        out.raised.append(
            IssueRaised(
                category, _summary(category, text), round(probability, 3), extractor="embedding"
            )
        )

    def _profile(self, sentence: _Sentence, out: Extraction) -> None:
        for rx, name in _RULES_NAME:
            for m in sentence.finditer(rx):
                value = m.group(1)
                if value.lower() in self._rules.not_names or _negated(sentence.text[: m.start()]):
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
        if spoken := sentence.search(self._rules.language):
            language = spoken.group(1).capitalize()
            out.profile.append(ProfileChange("language", language))
            out.memories.append(
                Learned(MemoryKind.PREFERENCE, "profile:language", f"Prefers {language}", 0.9)
            )

    def _constraints(self, sentence: _Sentence, out: Extraction) -> None:
        no_calls = sentence.search(_RULE_NO_CALLS)
        preferred: str | None = None
        for m in sentence.finditer(_RULE_CONTACT_BY):
            how = (m.group("how") or m.group("direct") or "").lower()
            if how:
                channels = self._rules.contact_channels
                preferred = channels.get(how) or channels.get(how.rstrip("s"))
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
        if sentence.search(_RULE_NO_MARKETING):
            out.memories.append(
                Learned(
                    MemoryKind.CONSTRAINT,
                    "constraint:marketing",
                    "Does not want marketing or promotional messages",
                    0.9,
                )
            )

    def _facts(self, sentence: _Sentence, out: Extraction) -> None:
        if m := sentence.search(self._rules.diet):
            diet = m.group(1).lower().replace(" ", "-")
            out.memories.append(Learned(MemoryKind.FACT, "fact:diet", f"Is {diet}", 0.9))
        for m in sentence.scan(_RULE_ALLERGY, "what"):
            what = _clean(m.group("what"))
            out.memories.append(
                Learned(
                    MemoryKind.FACT, f"fact:allergy:{_slug(what)}", f"Is allergic to {what}", 0.9
                )
            )
        if m := sentence.search(self._rules.occupation):
            job = (m.group(1) or m.group(2)).lower()
            article = "an" if job[0] in "aeiou" else "a"
            out.memories.append(
                Learned(MemoryKind.FACT, "fact:occupation", f"Is {article} {job}", 0.8)
            )
        if m := sentence.search(_RULE_WORK_PATTERN):
            out.memories.append(
                Learned(MemoryKind.FACT, "fact:work_pattern", f"Works {m.group(1).lower()}", 0.8)
            )
        if m := sentence.search(self._rules.access):
            need = (m.group(1) or f"uses a {m.group(2)}").lower()
            text = f"Is {need}" if m.group(1) else need[:1].upper() + need[1:]
            out.memories.append(Learned(MemoryKind.FACT, f"fact:access:{_slug(need)}", text, 0.9))
        for m in sentence.scan(self._rules.birthday, "when"):
            if m.group("who"):
                who = m.group("who").lower()
                when = _clean(m.group("when"))
                text = f"{who.capitalize()}'s birthday is on {_ordinal(when)}"
                slot = f"fact:birthday:{who}"
            else:
                when = _clean(m.group("when"))
                text, slot = f"Birthday is on {_ordinal(when)}", "fact:birthday:self"
            out.memories.append(Learned(MemoryKind.FACT, slot, text, 0.9))
        for m in sentence.finditer(self._rules.household):
            what = m.group("what").lower()
            out.memories.append(
                Learned(
                    MemoryKind.FACT,
                    f"fact:household:{what.rstrip('s')}",
                    f"Has {m.group('n').lower()} {what}",
                    0.8,
                )
            )

    def _contacts(self, sentence: _Sentence, out: Extraction) -> None:
        if m := sentence.search(_RULE_ADDRESS):
            if m.group("addr"):
                where = _clean(m.group("addr")).rstrip(".")
                text = f"Address: {where}" if _ADDRESS_SHAPE.fullmatch(where) else ""
            else:
                where = _clean(m.group("moved"))
                text = f"Lives in {where}" if _PLACE_SHAPE.fullmatch(where) else ""
            if text:
                out.memories.append(Learned(MemoryKind.CONTACT, "contact:address", text, 0.9))
            else:
                out.refused += 1
        if m := sentence.search(_RULE_EMAIL):
            out.memories.append(
                Learned(MemoryKind.CONTACT, "contact:email", f"Email: {m.group(1)}", 0.95)
            )
        if m := sentence.search(_RULE_PHONE):
            out.memories.append(
                Learned(MemoryKind.CONTACT, "contact:phone", f"Phone: {_clean(m.group(1))}", 0.95)
            )

    def _likes(self, sentence: _Sentence, out: Extraction) -> None:
        taken = {m.slot for m in out.memories}
        for rx, positive in ((_RULE_DISLIKE, False), (_RULE_LIKE, True)):
            for m in sentence.scan(rx, "obj"):
                obj = _clean(m.group("obj"))
                if _OBJECT_STOP.match(obj) or obj.lower() in self._rules.contact_channels:
                    continue
                if positive and _negated(sentence.text[: m.start("verb")]):
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

    def _issues(self, sentence: _Sentence, out: Extraction) -> None:
        if sentence.search(_RESOLVED) or _INFO_QUESTION.search(sentence.text):
            return
        seen = {r.category for r in out.raised}
        for category, rx in _ISSUE_RULES:
            if category not in seen and sentence.search(rx):
                out.raised.append(IssueRaised(category, _summary(category, sentence.text), 0.9))
                return


def _ordinal(when: str) -> str:
    """'12th' -> 'the 12th'; 'March 3' stays as it is."""
    return f"the {when}" if _ORDINAL.match(when) else when


_LLM_PROMPT = """Extract durable facts about the customer from their message.
Reply with JSON only: {"memories": [{"kind": "preference|fact|constraint|contact",
"slot": "short_snake_case_topic", "text": "third-person statement"}]}.
Only include what the customer states about themselves; return {"memories": []} otherwise."""


class LlmExtractor:
    """Asks an OpenAI-compatible LLM for memories the rules missed (off unless configured)."""

    def __init__(self, llm: ChatClient) -> None:
        self.llm = llm

    async def extract(self, text: str) -> list[Learned]:
        """Memories the LLM found; nothing (never an error) when its answer is unusable."""
        try:
            content = await self.llm.complete(
                [
                    ChatMessage("system", _LLM_PROMPT),
                    ChatMessage("user", json.dumps({"customer_message": text})),
                ],
                max_tokens=200,
                temperature=0,
            )
        except LLMUnavailable as exc:
            log.warning("LLM extractor unavailable: %s", exc)
            return []
        return parse_llm_memories(content)


def parse_llm_memories(content: str) -> list[Learned]:
    """Validate an LLM's JSON answer into memories, dropping anything malformed."""
    # The outermost braces: what a model wraps around its JSON ("Sure! {...}").
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end < start:
        return []
    try:
        data = json.loads(content[start : end + 1])
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
        text = _clean(normalize(text))
        if looks_like_instruction(text):
            continue
        learned.append(
            Learned(MemoryKind(kind), f"{kind}:{_slug(slot)}", text, 0.6, extractor="llm")
        )
    return learned
