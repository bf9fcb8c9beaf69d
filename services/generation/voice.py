"""Who a reply talks to, and how: the check that a reply is a message *to* the customer.

A small model asked to answer a customer often writes something else, and none of it trips
the grounding or tone checks:

- **narration** about the customer instead of a reply to them: "The customer is asking about
  the delivery time.", "She seems frustrated.", "Sam wants to change his address.";
- **meta text**: notes about itself ("As an AI language model..."), the frame of a reply rather
  than the reply ("Here is a possible response:", "Assistant:", "Dear [Customer Name]",
  "This response acknowledges..."), chat-template tokens, and paraphrases of its instructions
  ("You are a caring customer service assistant", "according to my guidelines");
- **another language** than the customer's: a Spanish question answered in English.

Each is phrased in a small number of stock ways (the labelled set
`data/voice_replies.jsonl` holds what SmolLM2 actually wrote), so patterns catch them and
name the words that fired, as the tone cues do. The language half uses `shared.language`
(py3langid), and judges only text long enough to identify: a short sentence, a name or "OK"
is never a finding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.events import CareFinding, ReplyFlag
from shared.language import LanguageIdentifier, language_of

# "The customer is asking...", "the user's order", "ask your customer": a reply that talks
# about the person it should be talking to (or to an agent about them). Service words after
# it ("customer service", "user guide", "your customer number") are fine.
_ABOUT_CUSTOMER = re.compile(
    r"\b(?:the|this|that|your)\s+(?:customer|user|client|caller|consumer|shopper|buyer)"
    r"(?:'s|\u2019s)?\b"
    r"(?!\s*(?:service|support|care|team|centre|center|portal|agreement|number|id\b|"
    r"reference|experience|satisfaction|relations|advisor|adviser|guide|manual|interface|"
    r"settings|profile|area|hub|helpline|line|charter|code|name|account|record|details))",
    re.IGNORECASE,
)
# "She is asking", "He wants": the customer as a third person (a sentence about a parcel
# starts "It" or "They", which are left alone).
_PRONOUN_NARRATION = re.compile(
    r"(?:^|[.!?]\s+)(?:he|she)\s+(?:is|was|has|had|wants?|needs?|seems?|feels?|asks?|"
    r"asked|would\s+like|mentions?|mentioned|says|said|thinks|expects?|wishes|wonders)\b",
    re.IGNORECASE,
)
_NARRATION_VERBS = (
    r"(?:is|was|has|had|wants|needs|seems|feels|asks|asked|would\s+like|mentions|mentioned|"
    r"says|said|thinks|expects|wishes|wonders|is\s+asking|is\s+upset|is\s+frustrated)"
)

_META = re.compile(
    # Talking about itself.
    r"\bas\s+an?\s+(?:ai|a\.i\.|artificial\s+intelligence|(?:large\s+)?language\s+model|llm|"
    r"chatbot|chat\s*bot|virtual\s+assistant|ai\s+(?:assistant|language\s+model|model))\b"
    r"|\bi(?:'m|\u2019m|\s+am)\s+(?:just\s+|only\s+|merely\s+)?an?\s+(?:ai|a\.i\.|"
    r"(?:large\s+)?language\s+model|llm|chatbot|artificial\s+intelligence)\b"
    # The frame of a reply instead of the reply.
    r"|\bhere(?:'s|\u2019s|\s+is|\s+are)\s+(?:a|an|my|the|one|some|your)\s+(?:\w+\s+){0,3}?"
    r"(?:response|reply|replies|responses|draft)s?\b"
    r"|\b(?:this|my|the\s+above|the\s+following|the\s+(?:revised|improved|suggested))\s+"
    r"(?:response|reply|draft|message)\s+(?:acknowledges|addresses|shows|aims|demonstrates|"
    r"provides|uses|is\s+(?:designed|written|intended|empathetic|caring)|was\s+written|"
    r"would|will\s+(?:help|show|acknowledge)|follows|keeps|avoids)\b"
    r"|\b(?:possible|suggested|sample|example|draft)\s+(?:response|reply)\s*:"
    r"|\bi\s+hope\s+this\s+(?:response|reply|draft)\b"
    r"|\bhere(?:'s|\u2019s|\s+is)\s+(?:a|an|the|my)\s+(?:\w+\s+){0,3}?(?:version|rewrite|"
    r"rephrasing)\s+of\b"
    r"|\bthis\s+is\s+an?\s+(?:\w+\s+){0,2}?example\s+of\b"
    r"|\byou\s+(?:can|could|should|might|may)\s+(?:respond|reply|say)\s*(?:with|like|as\s+follows)?\s*:"
    r"|\bi\s+(?:would|will|could|'ll|can)\s+(?:have\s+to\s+)?(?:rephrase|rewrite|reword)\b"
    # A label line before the reply ("Acknowledging the charge:", "Response 1:").
    r"|^\W*(?:acknowledg\w*|response|reply|answer|draft|option|version|solution|output|"
    r"apology|greeting|closing|opening|empathy)\b[^.!?\n]{0,40}:\s*$"
    # A label, a colon, then the reply in quotes on the next line: a frame around a reply.
    r"|:[ \t]*\n\s*[\"\u201c]"
    # Markup and knowledge-entry ids ("[orders/delivery-times]", "<billing/...>") are the
    # prompt's, not a reply's.
    r"|</?\s*(?:code|textarea|p|div|span|br|html|body|description|script|pre|response|reply|"
    r"answer|assistant|user)\b[^>\n]{0,40}>"
    r"|[\[<][a-z0-9_-]+/[a-z0-9_/-]+[\]>]"
    r"|\bi\s+would\s+(?:respond|reply|say)\s+(?:with|something\s+like|as\s+follows)\b"
    # Chat-template and instruction-format tokens.
    r"|<\|?\s*/?\s*(?:im_start|im_end|assistant|user|system|endoftext|eot_id)\s*\|?>"
    r"|\[/?INST\]|#{2,}\s*(?:response|instruction|reply|answer|input|output)\b"
    # Template placeholders the model left unfilled.
    r"|\[\s*(?:your|customer|client|company|insert|agent|name|first\s+name|full\s+name|"
    r"recipient|representative|support|contact|phone|email|link|url|website|address|"
    r"product|order\s+number|date|time)[^\]\n]{0,30}\]"
    r"|\{\{?\s*[a-z_]{2,30}\s*\}\}?",
    re.IGNORECASE,
)
# A role label opening a line or a sentence: "Assistant:", "Customer Service Agent:".
_ROLE_LABEL = re.compile(
    r"(?:^|\n|[.!?]\s+)\W{0,3}(?:assistant|user|customer|agent|system|bot|ai|care|human|"
    r"response|reply|answer|output|(?:customer\s+)?(?:service|support)(?:\s+(?:agent|rep|"
    r"representative|assistant))?|representative|chatbot)\s*\d?\s*:",
    re.IGNORECASE,
)
# Its instructions, paraphrased (eight words in a row are the guardrails' leak check).
_INSTRUCTIONS = re.compile(
    r"\byou\s+are\s+(?:an?|the)\s+(?:\w+\s+){0,3}?(?:assistant|agent|chatbot|bot|ai|"
    r"representative)\b|\byou\s+are\s+care\b"
    r"|\b(?:my|the\s+system|the\s+given)\s+(?:instructions|guidelines|prompt)\b"
    r"|\bsystem\s+prompt\b"
    r"|\baccording\s+to\s+(?:my|the)\s+(?:instructions|guidelines|rules|prompt)\b"
    r"|\bi\s+(?:was|am|have\s+been|'ve\s+been)\s+(?:told|instructed|programmed|prompted)\s+to\b"
    r"|\b(?:your|my|the)\s+(?:task|job|role|goal)\s+(?:is|was)\s+to\s+(?:respond|reply|answer|"
    r"acknowledge|help\s+the|write|draft)\b"
    r"|\bthe\s+knowledge\s+(?:section|base\s+says|entries)\b"
    r"|\b(?:customer|memory)\s+tags?\b|<\s*/?\s*(?:customer|memory|facts)\s*>",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class VoiceCheck:
    """The voice check for one turn: the customer's names and language."""

    names: tuple[str, ...] = ()
    """What the customer is called (profile name, preferred name): "Sam wants..." is
    narration."""
    language: str | None = None
    """The customer's language (ISO 639-1), when known; None: not judged."""
    identifier: LanguageIdentifier | None = None

    @classmethod
    def for_customer(
        cls,
        message: str,
        names: Sequence[str | None] = (),
        language: str | None = None,
        identifier: LanguageIdentifier | None = None,
    ) -> VoiceCheck:
        """From the turn: a language the profile or channel gave wins over identifying the
        customer's message."""
        lang = (language or "").split("-")[0].lower() or None
        if lang is None and identifier is not None:
            lang = language_of(message, identifier)
        first_names = tuple(dict.fromkeys(n.split()[0] for n in names if n and n.strip()))
        return cls(first_names, lang, identifier)

    def _name_narration(self, sentence: str) -> re.Match[str] | None:
        if not self.names:
            return None
        names = "|".join(re.escape(n) for n in self.names)
        # A name that opens a clause and is followed by a narrating verb ("Sam wants..."),
        # not a name said to them ("Sam, your order...").
        rx = rf"(?:^|[.!?;]\s+|\b(?:and|but|so|because)\s+)(?:{names})\s+{_NARRATION_VERBS}\b"
        return re.search(rx, sentence, re.IGNORECASE)

    def findings(self, sentence: str) -> list[CareFinding]:
        """What in one sentence is not a reply to the customer in their language."""
        found: list[CareFinding] = []
        narration = (
            _ABOUT_CUSTOMER.search(sentence)
            or _PRONOUN_NARRATION.search(sentence)
            or self._name_narration(sentence)
        )
        if narration:
            found.append(
                CareFinding(
                    check="voice",
                    flag=ReplyFlag.NOT_ADDRESSED,
                    detail=f"talks about the customer: {narration.group(0).strip(' .,')}",
                )
            )
        meta = _META.search(sentence) or _ROLE_LABEL.search(sentence)
        if meta:
            found.append(
                CareFinding(
                    check="voice",
                    flag=ReplyFlag.META_TEXT,
                    detail=f"not part of a reply: {meta.group(0).strip(' .')}",
                )
            )
        echo = _INSTRUCTIONS.search(sentence)
        if echo:
            found.append(
                CareFinding(
                    check="voice",
                    flag=ReplyFlag.META_TEXT,
                    detail=f"repeats its instructions: {echo.group(0).strip(' .')}",
                )
            )
        if self.language is not None and self.identifier is not None:
            said = language_of(sentence, self.identifier)
            if said is not None and said != self.language:
                found.append(
                    CareFinding(
                        check="language",
                        flag=ReplyFlag.WRONG_LANGUAGE,
                        detail=f"written in {said}, the customer writes {self.language}",
                    )
                )
        return found
