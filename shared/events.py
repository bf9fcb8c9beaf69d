"""Versioned event contracts exchanged over Kafka.

Every event carries the same envelope; the payload grows as the turn moves through the stages
(received -> analyzed -> contextualized -> routed), so a consumer never has to fetch state that
an earlier stage already knew, and a retry can always be served from the event alone.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, TypeVar, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

SCHEMA_VERSION = 1

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")]
"""Ids that come from outside (conversations, customers): safe in keys, URLs and logs."""

MAX_MESSAGE_CHARS = 4000

DEFAULT_TENANT = "default"
"""The tenant of events that name none (single-tenant set-ups, events from before tenants)."""

E = TypeVar("E", bound="Envelope")


def utcnow() -> datetime:
    """The current time, timezone-aware, as every event timestamp must be."""
    return datetime.now(UTC)


def new_trace_id() -> str:
    """A W3C-compatible 128-bit trace id (32 lowercase hex digits)."""
    return secrets.token_hex(16)


class Channel(StrEnum):
    """Where the customer reached us."""

    WEB = "web"
    API = "api"
    VOICE = "voice"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    EMAIL = "email"


log = logging.getLogger(__name__)


class _Model(BaseModel):
    # A tolerant reader: during a rolling deploy, consumers still on the old code read events
    # from producers already on the new one. An additive change (a new optional field) must not
    # dead-letter them, so unknown fields are ignored on read. Our own code cannot misspell a
    # field: mypy's pydantic plugin forbids unknown keyword arguments (`init_forbid_extra`).
    model_config = ConfigDict(extra="ignore", frozen=True)


_UNKNOWN_VALUE_ERRORS = frozenset({"literal_error", "enum"})


def _drop_unknown_items(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate a list, leaving out items that name a value this code does not know yet.

    A newer producer may add a signal name, a care check or a review tag; an older consumer
    keeps the items it understands (logging the others) instead of refusing the whole event.
    Any other error in an item still fails the event.
    """
    try:
        return handler(value)
    except ValidationError as exc:
        if not isinstance(value, list):
            raise
        unknown: set[int] = set()
        for error in exc.errors():
            loc = error["loc"]
            if error["type"] not in _UNKNOWN_VALUE_ERRORS or not loc or not isinstance(loc[0], int):
                raise
            unknown.add(loc[0])
        log.warning("left out %d list item(s) with values this version does not know", len(unknown))
        return handler([item for i, item in enumerate(value) if i not in unknown])


Tolerant = WrapValidator(_drop_unknown_items)
"""On a list of closed-vocabulary items: items with an unknown value are left out, not fatal."""


class CustomerMessage(_Model):
    """What the customer said, exactly as received at the edge."""

    turn_id: uuid.UUID
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]
    received_at: AwareDatetime
    language: str | None = None


class EmotionLabel(StrEnum):
    """The seven customer-service emotions the platform recognises."""

    ANGER = "anger"
    FRUSTRATION = "frustration"
    ANXIETY = "anxiety"
    SADNESS = "sadness"
    CONFUSION = "confusion"
    JOY = "joy"
    NEUTRAL = "neutral"


NEGATIVE_EMOTIONS = frozenset(
    {EmotionLabel.ANGER, EmotionLabel.FRUSTRATION, EmotionLabel.ANXIETY, EmotionLabel.SADNESS}
)
"""The labels that mean the customer is unhappy."""
NEGATIVE_SENTIMENT = -0.2
"""At or below this sentiment a message is negative whatever its label: the emotion service's
trajectory counts it in a negative streak, and generation's care check wants it acknowledged.
Calibrated on GoEmotions dev with the shipped emotion model (see the emotion datasheet)."""


SignalName = Literal[
    "shouting",
    "punctuation_burst",
    "human_request",
    "repetition",
    "urgency",
    "churn_threat",
    "legal_threat",
    "profanity",
    "vulnerability",
    "repeat_contact",
]
"""The named cues the emotion service finds; escalation policies refer to them by name."""
SIGNAL_NAMES: tuple[str, ...] = get_args(SignalName)


class Signal(_Model):
    """A named cue found in the message, with the words that show it."""

    name: SignalName
    evidence: str
    weight: float = 1.0


class EmotionAnalysis(_Model):
    """How the customer seems to feel in this message, and why we think so."""

    label: EmotionLabel
    scores: dict[EmotionLabel, float]
    sentiment: Annotated[float, Field(ge=-1.0, le=1.0)]
    intensity: Annotated[float, Field(ge=0.0, le=1.0)]
    signals: Annotated[list[Signal], Tolerant] = []
    explanation: str = ""
    model: str
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    """How far to trust the label: the model's probability for it, 0 for input it cannot read."""
    degraded: bool = False
    """True when the model failed and this is a neutral stand-in."""


class Trend(StrEnum):
    """Where the conversation's feeling is heading."""

    IMPROVING = "improving"
    STABLE = "stable"
    WORSENING = "worsening"


class EmotionTrajectory(_Model):
    """The conversation's emotional course up to and including this turn."""

    turns: int
    smoothed_sentiment: Annotated[float, Field(ge=-1.0, le=1.0)]
    trend: Trend
    turns_since_negative: int | None
    """Customer turns since the last negative one (0: this one); None if none was negative."""
    negative_streak: int
    escalation_risk: Annotated[float, Field(ge=0.0, le=1.0)]
    """0-1: how likely this conversation needs a person now; the escalation policy reads it."""
    risk_factors: list[str] = []


class Role(StrEnum):
    """Who spoke a turn."""

    CUSTOMER = "customer"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"


class HistoryTurn(_Model):
    """One earlier turn of the conversation, as memory recalls it."""

    role: Role
    text: str
    at: AwareDatetime
    similarity: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    """For a customer turn: how close in meaning it is to this turn's message (cosine of their
    sentence embeddings), so a question asked again in other words is seen as a repeat; None
    when memory did not compare them (other roles, a turn from before this field)."""


class MemoryKind(StrEnum):
    """What sort of thing memory learned about a customer."""

    PREFERENCE = "preference"
    """Likes and dislikes: "I love eco-friendly stuff"."""
    FACT = "fact"
    """Facts about them or their life: "I'm vegetarian", "my daughter's birthday is the 12th"."""
    CONSTRAINT = "constraint"
    """How to (not) deal with them: "email me, don't call"."""
    CONTACT = "contact"
    """Addresses and numbers they gave: one per slot, a new one replaces the old."""


class CustomerProfile(_Model):
    """Who the customer is, as far as the platform knows."""

    customer_id: Identifier
    name: str | None = None
    preferred_name: str | None = None
    """What they like to be called ("call me Sam")."""
    language: str | None = None
    tier: str | None = None
    """Value tier (e.g. gold), from the tenant's CRM or the admin API."""
    lifetime_value: float | None = None
    purchase_summary: str | None = None
    """Purchase history in a sentence ("12 orders, last order A1001"), from the tenant's CRM."""
    consent: dict[str, bool] = {}
    """Consents by purpose, e.g. {"personalisation": true, "marketing": false}."""
    channels: list[str] = []
    """The channel identities that resolve to this customer (web id, phone, WhatsApp id)."""
    conversations: int = 0


class MemoryItem(_Model):
    """One thing remembered about the customer, and where it came from."""

    memory_id: uuid.UUID
    kind: MemoryKind
    slot: str
    """What it is about (e.g. `preference:eco_friendly`, `contact:address`); one value per slot."""
    text: str
    """The memory in words a prompt can use: "Prefers eco-friendly products"."""
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    source_turn_id: uuid.UUID | None = None
    learned_at: AwareDatetime
    relevance: float | None = None
    """Similarity to this turn's message when it was recalled for it."""


class OpenIssue(_Model):
    """A problem the customer raised that is not resolved yet."""

    issue_id: uuid.UUID
    category: str
    summary: str
    status: Literal["open", "pending", "resolved"] = "open"
    conversation_id: Identifier
    opened_at: AwareDatetime
    updated_at: AwareDatetime


class ConversationContext(_Model):
    """What memory knows that this turn needs."""

    recent_turns: list[HistoryTurn] = []
    memories_used: list[str] = []
    """Ids of the memories below, so audit and reviewers see why a reply was personal."""
    customer_tier: str | None = None
    """The customer's value tier (e.g. gold) when memory knows it."""
    source: Literal["cache", "database", "empty"] = "empty"
    profile: CustomerProfile | None = None
    memories: Annotated[list[MemoryItem], Tolerant] = []
    """Memories relevant to this message, most relevant first."""
    open_issues: list[OpenIssue] = []
    """Unresolved issues, from this and past conversations."""
    emotional_history: str = ""
    """One or two sentences on how past conversations went (empty for a new customer)."""
    token_estimate: int = 0
    """Approximate prompt tokens this context takes; assembly keeps it within a budget."""


class RouteTarget(StrEnum):
    """Who answers this turn."""

    BOT = "bot"
    HUMAN = "human"


Severity = Literal["low", "medium", "high"]
"""How urgently a person is needed; each escalation rule declares its own in the policy file."""


class RouteReason(_Model):
    """One reason for a routing decision, with its evidence."""

    code: str
    detail: str
    severity: Severity | None = None
    """The firing rule's severity (None for reasons that are not rules, like `human_owns`)."""


class Handoff(_Model):
    """The human side of a routing decision: the ticket and where it stands."""

    ticket_id: uuid.UUID
    new: bool
    """True on the turn that opened the ticket: the customer is told a person is coming."""
    announce: bool = False
    """True on a later turn when nobody has told the customer yet (a flagged bot reply opened
    the ticket): generation sends the handoff notice with this turn, as with `new`."""
    owner: Literal["queued", "agent"]
    agent_id: str | None = None
    queue_position: int = 0
    eta_minutes: int = 0


class RoutingDecision(_Model):
    """Escalation's verdict for the turn."""

    target: RouteTarget
    reasons: Annotated[list[RouteReason], Tolerant] = []
    policy: str
    epoch: int = 0
    """The conversation's ownership epoch when routed; a bot reply from an older epoch (a
    person took over meanwhile) is never delivered."""
    handoff: Handoff | None = None


class TurnReceived(_Model):
    """Payload of turn.received."""

    message: CustomerMessage
    after_reply_id: uuid.UUID | None = None
    """The last reply the edge delivered in this conversation before this message: what the
    customer had seen. Memory waits, briefly, until it has stored that reply, so the context
    of a message sent the instant a reply appeared includes it."""


class TurnAnalyzed(TurnReceived):
    """Payload of turn.analyzed: the turn plus its emotion analysis."""

    emotion: EmotionAnalysis
    trajectory: EmotionTrajectory | None = None


class TurnIntent(_Model):
    """What the turn is about, the skill queue that serves it and what it names
    (`shared/intent.py`); memory reads it from the embedding it makes anyway."""

    intent: str
    skill: str
    urgency: Annotated[float, Field(ge=0.0, le=1.0)]
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    evidence: str = ""
    entities: dict[str, str] = {}


class TurnContextualized(TurnAnalyzed):
    """Payload of turn.contextualized: the analyzed turn plus what memory recalls."""

    context: ConversationContext
    intent: TurnIntent | None = None
    """Absent from events of before intents; readers then read it themselves."""


class TurnRouted(TurnContextualized):
    """Payload of turn.routed: the contextualized turn plus who should answer."""

    route: RoutingDecision


class ReplyDelta(_Model):
    """A slice of a reply still being generated, for channels that stream."""

    turn_id: uuid.UUID
    reply_id: uuid.UUID
    seq: int
    text: str
    withdrawn: bool = False
    """The reply stops here and no final reply follows (a person took the conversation
    while the bot was writing): channels take back what streamed of it."""


class ReplyFlag(StrEnum):
    """What generation can say about a reply it sent (the reply's `flags`).

    Escalation's policy names these in `generation_flags`; an unknown name there is refused.
    Agent replies carry `agent:<id>` flags of their own, outside this list.
    """

    HANDOFF = "handoff"
    """The system notice that a person is coming."""
    LLM_FALLBACK = "llm_fallback"
    """The LLM could not answer; the caring fallback text was sent."""
    NEEDS_HUMAN = "needs_human"
    EMPTY_COMPLETION = "empty_completion"
    CONNECTION = "connection"
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"  # noqa: S105 - a flag, not a secret
    TIMEOUT = "timeout"
    CIRCUIT_OPEN = "circuit_open"
    HTTP_ERROR = "http_error"
    """The LLM server answered with an error status (its code is in the logs and metrics)."""
    GUARDRAIL = "guardrail"
    PROMPT_LEAK = "prompt_leak"
    REGENERATED = "regenerated"
    REPLACED = "replaced"
    NEEDS_APPROVAL = "needs_approval"
    SENSITIVE_MASKED = "sensitive_masked"
    CARE_FAILED = "care_failed"
    """The LLM's reply failed the care check (the finding flags say which part)."""
    COMPOSED = "composed"
    """The text was composed without the LLM from knowledge, playbook and strategy."""
    ACTION_FAILED = "action_failed"
    """A tenant system (orders, accounts, refunds) did not answer; a colleague will check."""
    UNGROUNDED = "ungrounded"
    """A number, address, link, amount, date or reference that no source backs."""
    UNBACKED_ACTION = "unbacked_action"
    """A claim of having done something ("I've refunded") with no action result saying so."""
    UNKIND_TONE = "unkind_tone"
    """Hostile, sarcastic, blaming or dismissive."""
    NO_ACKNOWLEDGEMENT = "no_acknowledgement"
    """The customer is upset and the first sentence does not acknowledge it."""
    OFF_TOPIC = "off_topic"
    """Unrelated to the message and the retrieved knowledge."""
    OVERPROMISE = "overpromise"
    """Says a request the playbook marks as unmet can be met."""
    NO_ALTERNATIVE = "no_alternative"
    """An unmet request without the playbook's alternative."""
    REPEATED = "repeated"
    """Word for word the previous bot reply."""
    NOT_ADDRESSED = "not_addressed"
    """Talks about the customer ("The customer is asking...") instead of to them."""
    META_TEXT = "meta_text"
    """Not part of a reply: "As an AI", "Here is a response:", role labels, unfilled
    placeholders, its instructions paraphrased."""
    WRONG_LANGUAGE = "wrong_language"
    """Written in another language than the customer's."""
    CUT = "cut"
    """The LLM server stopped the reply at its token limit: it ends at its last whole
    sentence, and replaces what streamed when some of that was taken off."""


class CareVerdict(StrEnum):
    """What the care check decided about a bot reply (or an agent draft)."""

    PASSED = "passed"
    """The LLM's reply passed as written (guardrail masking aside)."""
    REGENERATED = "regenerated"
    """The first reply failed; the regenerated one passed."""
    COMPOSED = "composed"
    """Both failed, or the mode is `composed`: the reply was composed without the LLM."""
    FAILED = "failed"
    """An agent draft that failed (shown to the agent with its findings, never sent)."""
    UNCHECKED = "unchecked"
    """Mode `llm`: sent as the guardrails left it; the findings are recorded, not acted on."""
    FALLBACK = "fallback"
    """The LLM was unavailable: the caring fallback text."""


class CareFinding(_Model):
    """One problem the care check found, with the words that show it."""

    check: Literal[
        "grounding",
        "tone",
        "acknowledgement",
        "relevance",
        "co_creation",
        "leak",
        "repetition",
        "voice",
        "language",
    ]
    flag: ReplyFlag
    detail: str = ""


class ReplyGenerated(_Model):
    """Payload of reply.generated: a complete reply to one customer turn."""

    turn_id: uuid.UUID
    reply_id: uuid.UUID
    author: Role
    text: str
    turn_received_at: AwareDatetime | None = None
    """When the customer's message reached the edge, for end-to-end latency."""
    flags: list[str] = []
    model: str | None = None
    variant: str | None = None
    """Which prompt produced it (e.g. `baseline` or `care`), for A/B comparison."""
    playbook: str | None = None
    """The scenario playbook the prompt followed, if any."""
    knowledge_used: list[str] = []
    """Ids of the knowledge-base entries the prompt carried."""
    memories_used: list[str] = []
    """Ids of the customer memories the prompt carried."""
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens: int | None = None
    care_verdict: CareVerdict | None = None
    """The care check's decision (None for replies it does not check: notices, agents)."""
    care_findings: Annotated[list[CareFinding], Tolerant] = []
    """What failed, first reply and regeneration together, so a reviewer sees why."""
    relevance: float | None = None
    """Embedding similarity of the sent text to the message and retrieved knowledge."""
    reply_mode: str | None = None
    actions_used: list[str] = []
    """Actions run on the tenant's systems for this reply (`order_status`, `tracking`...), a
    failed one as `<action>:failed`."""
    template_variables: dict[str, str] = {}
    """Values for a messaging template's placeholders (`{"1": "Sam", "2": "your refund"}`),
    when the reply must go out as the template its `whatsapp_template:<name>` flag names."""
    """The generation mode that produced it: `llm`, `llm_checked` or `composed`."""


class AgentAssist(_Model):
    """Payload of assist.suggested: help for the agent who has the conversation."""

    turn_id: uuid.UUID
    suggestions: list[str] = []
    """Replies the agent could send (edited or as they are)."""
    tips: list[str] = []
    """Coaching for this moment, from the customer's emotion and signals."""
    model: str | None = None
    suggestion_verdicts: Annotated[list[CareVerdict], Tolerant] = []
    """The care check's verdict on each suggestion, in the same order."""
    suggestion_findings: list[Annotated[list[CareFinding], Tolerant]] = []
    """What the care check found in each suggestion (the agent decides what to send)."""
    replied: bool = False
    """Generation also answered this turn on reply.generated (the handoff notice). The edge
    then keeps the turn until that reply arrives: this event alone does not settle it."""


class Envelope(_Model):
    """The fields every event carries, whatever its payload."""

    event_type: str
    event_id: uuid.UUID
    schema_version: int = SCHEMA_VERSION
    conversation_id: Identifier
    customer_id: Identifier
    channel: Channel
    tenant: Identifier = DEFAULT_TENANT
    """The tenant the customer belongs to, as the edge verified it (optional: older events
    and single-tenant set-ups are the default tenant's)."""
    occurred_at: AwareDatetime
    trace_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    causation_id: uuid.UUID | None = None
    """The event this one was derived from (None at the edge)."""
    payload: BaseModel
    """Each event type narrows this to its own payload model."""

    def derive(self, cls: type[E], payload: Any, *, part: str = "") -> E:
        """Build the next stage's event from this one.

        The new id is a UUIDv5 of this id, the new type and `part` (for several events of one
        type from one input, like streamed deltas), so redelivering this event produces the
        same downstream ids and every store can deduplicate on them.
        """
        return cls(
            event_type=cls.type_name(),
            event_id=uuid.uuid5(self.event_id, cls.type_name() + part),
            conversation_id=self.conversation_id,
            customer_id=self.customer_id,
            channel=self.channel,
            tenant=self.tenant,
            occurred_at=utcnow(),
            trace_id=self.trace_id,
            causation_id=self.event_id,
            payload=payload,
        )

    @classmethod
    def create(
        cls,
        *,
        conversation_id: str,
        customer_id: str,
        channel: Channel,
        payload: Any,
        trace_id: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> Self:
        """Start a new event at the edge, with a fresh id and trace."""
        return cls(
            event_type=cls.type_name(),
            event_id=uuid.uuid4(),
            conversation_id=conversation_id,
            customer_id=customer_id,
            channel=channel,
            occurred_at=utcnow(),
            trace_id=trace_id or new_trace_id(),
            tenant=tenant,
            payload=payload,
        )

    @classmethod
    def type_name(cls) -> str:
        """The `event_type` this class always carries."""
        default = cls.model_fields["event_type"].default
        if not isinstance(default, str):
            raise TypeError(f"{cls.__name__} has no fixed event_type")
        return default


class TurnReceivedEvent(Envelope):
    """A customer message accepted at the edge."""

    event_type: Literal["turn.received"] = "turn.received"
    payload: TurnReceived


class TurnAnalyzedEvent(Envelope):
    """A turn with its emotion analysis."""

    event_type: Literal["turn.analyzed"] = "turn.analyzed"
    payload: TurnAnalyzed


class TurnContextualizedEvent(Envelope):
    """A turn with its emotion analysis and memory context."""

    event_type: Literal["turn.contextualized"] = "turn.contextualized"
    payload: TurnContextualized


class TurnRoutedEvent(Envelope):
    """A turn with its routing decision."""

    event_type: Literal["turn.routed"] = "turn.routed"
    payload: TurnRouted


class ReplyDeltaEvent(Envelope):
    """Part of a reply being streamed."""

    event_type: Literal["reply.delta"] = "reply.delta"
    payload: ReplyDelta


class ReplyGeneratedEvent(Envelope):
    """A complete reply, from the bot or from an agent."""

    event_type: Literal["reply.generated"] = "reply.generated"
    payload: ReplyGenerated


class AssistSuggestedEvent(Envelope):
    """Agent assist for a turn a person is handling."""

    event_type: Literal["assist.suggested"] = "assist.suggested"
    payload: AgentAssist


class Feedback(_Model):
    """Payload of feedback.received: a customer's, reviewer's or agent's rating."""

    rating: Annotated[int, Field(ge=1, le=5)]
    """1 (very poor) to 5 (excellent), as CSAT surveys ask it."""
    comment: Annotated[str, StringConstraints(max_length=2000)] = ""
    source: Literal["customer", "reviewer", "agent"] = "customer"
    """Who rated: the customer (CSAT), a reviewer, or the agent who took the conversation over
    (`agent`: how the bot handled it before the handoff, not the customer's satisfaction)."""
    reply_id: uuid.UUID | None = None
    """The reply being rated, when the rating is for one reply rather than the conversation."""
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    """How likely they are to recommend us, 0-10, when the survey asked."""
    agent_id: str | None = None
    """The agent who rated, when `source` is `agent`."""
    ticket_id: uuid.UUID | None = None
    """The ticket the agent rated the bot's part of, when `source` is `agent`."""


class FeedbackReceivedEvent(Envelope):
    """A satisfaction rating for a conversation or a reply."""

    event_type: Literal["feedback.received"] = "feedback.received"
    payload: Feedback


class CustomerErased(_Model):
    """Payload of customer.erased: everything about this customer must go."""

    erased_customer_id: Identifier
    identities: list[str] = []
    """Every channel identity that resolved to the customer, which may key other stores."""
    conversation_ids: list[str] = []
    """Their conversations, which key hot state in Redis and rows in other services."""
    requested_by: str
    requested_at: AwareDatetime


class CustomerErasedEvent(Envelope):
    """A right-to-erasure request carried out by memory, for the other services to act on."""

    event_type: Literal["customer.erased"] = "customer.erased"
    payload: CustomerErased


class DeadLetter(_Model):
    """A message a service could not process, with the reason, ready to be replayed.

    Not an `Envelope`: the original may be so broken that it has no conversation id.
    """

    event_type: Literal["deadletter"] = "deadletter"
    dead_letter_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: int = SCHEMA_VERSION
    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    service: str
    consumer_group: str
    reason: str
    error_type: str
    attempts: int
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    failed_at: AwareDatetime = Field(default_factory=utcnow)


class CloseReason(StrEnum):
    """Why a conversation ended."""

    ENDED = "ended"
    """The customer (or their channel) ended the chat."""
    IDLE = "idle"
    """Nobody wrote for the channel's idle timeout."""
    AGENT_RESOLVED = "agent_resolved"
    """An agent resolved the ticket, with a disposition."""


class ConversationClosed(_Model):
    """Payload of conversation.closed: the conversation is over, for outcome measurement."""

    reason: CloseReason
    disposition: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")] | None = None
    """An agent's disposition (e.g. `resolved`, `unresolved`, `duplicate`, `callback`)."""
    agent_id: str | None = None
    ticket_id: uuid.UUID | None = None
    last_activity_at: AwareDatetime | None = None
    """The last turn or reply before the close (for an idle timeout, when it started)."""


class ConversationClosedEvent(Envelope):
    """A conversation ended: by the customer, by an idle timeout or by an agent's resolve."""

    event_type: Literal["conversation.closed"] = "conversation.closed"
    payload: ConversationClosed


REVIEW_CRITERIA: tuple[str, ...] = (
    "overall_experience",
    "satisfaction",
    "understands_query",
    "understands_emotion",
    "acknowledges_feelings",
    "addresses_needs",
    "demonstrates_care",
)
"""The paper's seven criteria (its Table 1), each scored 1-5 by a reviewer."""

ReviewTag = Literal["invented_fact", "wrong_tone", "missed_need", "no_alternative"]
"""Problems a reviewer can name on a reply."""

Score = Annotated[int, Field(ge=1, le=5)]


class ReviewScores(_Model):
    """A reviewer's 1-5 score on each of the seven criteria."""

    overall_experience: Score
    satisfaction: Score
    understands_query: Score
    understands_emotion: Score
    acknowledges_feelings: Score
    addresses_needs: Score
    demonstrates_care: Score


class ReviewSubmitted(_Model):
    """Payload of review.submitted: a person's review of one bot reply."""

    review_id: uuid.UUID
    reply_id: uuid.UUID
    reviewer_id: str
    scores: ReviewScores
    tags: Annotated[list[ReviewTag], Tolerant] = []
    better_reply: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)] = ""
    """The reply the reviewer would have sent, when they wrote one."""
    comment: Annotated[str, StringConstraints(max_length=2000)] = ""
    variant: str | None = None
    """Recorded for evaluation; never shown to the reviewer."""
    submitted_at: AwareDatetime


class ReviewSubmittedEvent(Envelope):
    """A reviewer scored a bot reply on the seven criteria."""

    event_type: Literal["review.submitted"] = "review.submitted"
    payload: ReviewSubmitted
