"""Replies composed without the LLM: grounded by construction, kind by construction.

When the LLM's reply fails the care check twice, or the operator chose the `composed` mode,
the reply is put together from the turn's own ingredients, each of which is already checked:

1. an acknowledgement chosen by the emotion strategy (or the playbook's own opening, e.g.
   condolences), with the customer's preferred name;
2. the retrieved knowledge answer: the sentences of the best entry that share the most words
   with the message (knowledge text is the tenant's own, so every fact in it is grounded),
   plus, when the request cannot be met, the entry's sentences that offer the alternative;
3. the playbook's next step, which states no fact of its own.

With nothing in the knowledge base for the question, the reply says so and asks a colleague
(flag `needs_human`, so escalation queues the conversation) rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.generation.care import words
from services.generation.guardrails import split_sentences
from services.generation.knowledge import KnowledgeHit, tokenize
from services.generation.playbooks import PlaybookMatch, cue_pattern
from shared.events import EmotionLabel, ReplyFlag, TurnRouted

ACKNOWLEDGEMENTS: dict[EmotionLabel, str] = {
    EmotionLabel.ANGER: "I'm sorry about this{name}, and I understand why you're upset.",
    EmotionLabel.FRUSTRATION: "I'm sorry this has been so frustrating{name}.",
    EmotionLabel.ANXIETY: "I understand this is worrying{name}, so let's sort it out together.",
    EmotionLabel.SADNESS: "I'm so sorry{name}; that sounds really hard.",
    EmotionLabel.CONFUSION: "I can see this is confusing{name}, so let's take it one step at "
    "a time.",
    EmotionLabel.JOY: "That's lovely to hear{name}!",
    EmotionLabel.NEUTRAL: "Thanks for asking{name}.",
}
UNMET_ACK = "Thanks for asking{name}, and I can see why that matters to you."
NEGATIVE_NEUTRAL_ACK = "I'm sorry this hasn't been the experience you expected{name}."
"""For an upset customer whose label is neutral or joy (sarcasm, a flat complaint)."""
REPEAT_ACK = "I'm sorry{name}, I know I've said some of this already, so let me put it another way."
NO_KNOWLEDGE = (
    "I don't want to guess about this, so I've asked a colleague to check and they will reply here."
)
OFFER_COLLEAGUE = "If that doesn't answer it, I can bring in a colleague."
MAX_SENTENCES = 3
"""Knowledge sentences in a composed reply: an answer, not the whole policy."""


@dataclass(frozen=True)
class Composed:
    """A composed reply and the flags it carries."""

    text: str
    flags: tuple[ReplyFlag, ...] = ()


def _name(turn: TurnRouted) -> str:
    profile = turn.context.profile
    name = (profile.preferred_name or profile.name) if profile else None
    if not name:
        return ""
    first = name.strip().split()[0]
    # A name is quoted from memory: only a plain word goes into a sentence we compose.
    return f", {first}" if re.fullmatch(r"[A-Za-z][A-Za-z'-]{0,30}", first) else ""


def acknowledgement(
    turn: TurnRouted, match: PlaybookMatch | None, negative: bool, name: str
) -> str:
    """The opening: the playbook's own, or the one for the emotion the strategy answers."""
    book = match.playbook if match is not None else None
    # A celebration's "lovely to hear" is never the answer to someone upset.
    if book is not None and book.acknowledgement and not (negative and book.sincere_only):
        return book.acknowledgement.format(name=name)
    label = turn.emotion.label
    if match is not None and match.unmet and not negative:
        # A "no" is coming: show the request was heard, not cheer.
        return UNMET_ACK.format(name=name)
    if negative and label in (EmotionLabel.NEUTRAL, EmotionLabel.JOY, EmotionLabel.CONFUSION):
        if label is EmotionLabel.CONFUSION:
            return ACKNOWLEDGEMENTS[label].format(name=name)
        return NEGATIVE_NEUTRAL_ACK.format(name=name)
    return ACKNOWLEDGEMENTS[label].format(name=name)


def _content_words(text: str) -> list[str]:
    # "what's" and "customer's" share an "s": overlap needs real words.
    return [w for w in tokenize(text) if len(w) > 2]


def answer_sentences(
    message: str, hits: Sequence[KnowledgeHit], match: PlaybookMatch | None
) -> list[str]:
    """The knowledge sentences that answer the message, in the entry's own order."""
    if not hits:
        return []
    entry = hits[0].entry
    sentences = [s.strip() for s in split_sentences(entry.text) if s.strip()]
    query = set(_content_words(message))
    if match is not None:
        query |= set(_content_words(match.playbook.topics))
    scored = [(len(query & set(_content_words(s))), i) for i, s in enumerate(sentences)]
    chosen = {i for score, i in sorted(scored, key=lambda x: (-x[0], x[1]))[:2] if score > 0}
    if not chosen:
        # The entry shares no word with the question: retrieval reached; better no answer.
        return []
    if min(chosen) > 0 and len(sentences[0].split()) <= 25:
        # The entry's first sentence names its subject ("The Bramble Green range ..."): a
        # later one alone ("It includes bottles") would not make sense.
        chosen = {0, min(chosen)}
    book = match.playbook if match else None
    if match is not None and match.unmet and book is not None and book.unmet is not None:
        alt = re.compile("|".join(cue_pattern(c) for c in book.unmet.alternatives), re.I)
        # The refusal and the alternative sit together in the entry: bring the alternative.
        for i, s in enumerate(sentences):
            if i not in chosen and alt.search(s) and len(chosen) < MAX_SENTENCES:
                chosen.add(i)
                break
    return [second_person(sentences[i]) for i in sorted(chosen)][:MAX_SENTENCES]


_THIRD_PERSON = (
    (re.compile(r"\bthe customer's\b", re.I), "your"),
    (re.compile(r"\b(?:the customer|customers)\b", re.I), "you"),
)


def second_person(sentence: str) -> str:
    """Knowledge is written about "the customer"; a reply speaks to them. Words only: no
    fact changes."""
    out = sentence
    for rx, repl in _THIRD_PERSON:
        out = rx.sub(repl, out)
    if out and sentence[:1].isupper():
        out = out[0].upper() + out[1:]
    return out


def compose(
    turn: TurnRouted,
    hits: Sequence[KnowledgeHit],
    match: PlaybookMatch | None,
    *,
    negative: bool,
    previous_reply: str | None = None,
) -> Composed:
    """A reply from the acknowledgement, the knowledge answer and the playbook's next step."""
    name = _name(turn)
    opening = acknowledgement(turn, match, negative, name)
    body = answer_sentences(turn.message.text, hits, match)
    flags: list[ReplyFlag] = [ReplyFlag.COMPOSED]
    parts = [opening, *body]
    if not body:
        parts.append(NO_KNOWLEDGE)
        flags.append(ReplyFlag.NEEDS_HUMAN)
    elif match is not None and match.playbook.next_step:
        parts.append(match.playbook.next_step.strip())
    else:
        parts.append(OFFER_COLLEAGUE)
    text = " ".join(p.strip() for p in parts if p.strip())
    if previous_reply and words(text) == words(previous_reply):
        # The customer asked again: the same words would read as not listening.
        text = " ".join([REPEAT_ACK.format(name=name), *parts[1:-1], OFFER_COLLEAGUE])
    return Composed(text, tuple(flags))
