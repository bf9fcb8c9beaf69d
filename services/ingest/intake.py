"""The one way in: every channel's messages and ratings pass through here.

REST, the WebSocket, the provider webhooks (through burst merging) and feedback all call
`Intake`; the routers only translate their transport into these calls and the answers back.
For each message, in this order:

1. card numbers, security codes, IBANs and SSNs in the text become tokens (`shared.pii`), so
   the raw value never reaches Redis, Kafka or any store;
2. the rate limits of the customer, tenant and client address are spent;
3. the conversation is claimed for (tenant, customer), or refused if it is someone else's;
4. the client's message id is claimed, with the event itself, so a resend gets the first
   acceptance back;
5. `turn.received` is published (and the claim released if that fails, so a retry is new),
   then the claim is marked published. A replica killed between claim and publish leaves the
   claim unmarked: the client's resend then publishes the claimed event (same id, so the
   pipeline treats a second copy as a redelivery) instead of acknowledging a turn that never
   left the edge.
6. the turn is kept in Redis until its reply comes back, and published again (same event) if
   the broker lost it (`services/ingest/replay.py`).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from prometheus_client import Counter
from pydantic import AfterValidator, BeforeValidator, StringConstraints

from services.ingest.channels.bursts import BurstMerger
from services.ingest.edge import EdgeGuard
from services.ingest.ownership import Owners, Party
from services.ingest.replay import TurnReplay
from services.ingest.settings import IngestSettings
from services.ingest.shown import LastShown
from shared.events import (
    MAX_MESSAGE_CHARS,
    Channel,
    CloseReason,
    ConversationClosed,
    ConversationClosedEvent,
    CustomerMessage,
    Envelope,
    Feedback,
    FeedbackReceivedEvent,
    TurnReceived,
    TurnReceivedEvent,
    new_trace_id,
    utcnow,
)
from shared.http import ApiError
from shared.kafka import EventBus
from shared.pii import redact

log = logging.getLogger(__name__)

MESSAGES = Counter(
    "cbd_ingest_messages_total",
    "Customer messages at the edge, by outcome.",
    ["channel", "outcome"],
)

FEEDBACK = Counter(
    "cbd_ingest_feedback_total",
    "Satisfaction ratings at the edge (widget and POST .../feedback), by outcome.",
    ["channel", "outcome"],
)

REDACTED = Counter(
    "cbd_ingest_redactions_total",
    "Card numbers, security codes, IBANs and SSNs replaced by tokens at the edge, by kind.",
    ["kind"],
)

ENDS = Counter(
    "cbd_ingest_conversation_ends_total",
    "Customers ending their chat (widget, chat page, POST .../end), by outcome.",
    ["channel", "outcome"],
)

DEDUPE_TTL_S = 24 * 3600

ENDED_TEMPLATE = "conv-ended:{conversation}"
"""A conversation its customer ended (after the Redis key prefix); erasure deletes it."""

PROVIDER_CHANNELS = frozenset({Channel.SMS, Channel.WHATSAPP, Channel.VOICE})
"""Channels whose messages only arrive through the providers' signed webhooks."""

# C0 and C1 control characters other than tab and new line (which text areas produce).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _newlines(value: object) -> object:
    return value.replace("\r\n", "\n").replace("\r", "\n") if isinstance(value, str) else value


def _no_controls(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed (new lines and tabs are)")
    return value


def _words(value: str) -> str:
    value = _no_controls(value).strip()
    if not value:
        raise ValueError("must have some words, not only spaces")
    return value


def without_controls(text: str) -> str:
    """Provider text with line ends normalised and control characters dropped.

    A provider's webhook is not refused for a stray control character its customer's phone
    sent: the words still deserve an answer.
    """
    return _CONTROL.sub("", str(_newlines(text)))


CustomerText = Annotated[
    str,
    BeforeValidator(_newlines),
    StringConstraints(max_length=MAX_MESSAGE_CHARS),
    AfterValidator(_words),
]
"""A customer's message: 1-4000 characters after trimming, no control characters."""

Comment = Annotated[
    str,
    BeforeValidator(_newlines),
    StringConstraints(max_length=2000),
    AfterValidator(lambda value: _no_controls(value).strip()),
]

ClientMessageId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")]
"""The client's own id for a message, so a resend is recognised (1-128 safe characters)."""


def _not_a_provider(channel: Channel) -> Channel:
    if channel in PROVIDER_CHANNELS:
        raise ValueError(
            f"{channel.value} messages arrive only through the provider's signed webhook"
        )
    return channel


DirectChannel = Annotated[Channel, AfterValidator(_not_a_provider)]
"""A channel a REST caller may name: api, web or email, never a provider's."""


@dataclass(frozen=True)
class Accepted:
    """A message the edge took responsibility for."""

    turn_id: str
    event_id: str
    trace_id: str
    text: str
    """The text as published: what the customer wrote, sensitive numbers replaced."""
    duplicate: bool = False
    """True when this client message id was accepted before and nothing new was published."""


@dataclass(frozen=True)
class Rated:
    """A rating the edge took responsibility for."""

    event_id: str
    duplicate: bool = False


@dataclass(frozen=True)
class Ended:
    """A conversation its customer ended: `conversation.closed` is on its way."""

    event_id: str
    duplicate: bool = False
    """True when the conversation had been ended before; nothing new was published."""


def conversation_ended() -> ApiError:
    """The answer to a message in a conversation its customer ended."""
    return ApiError(
        409,
        "conversation_ended",
        "this conversation has ended; start a new one to keep talking",
    )


def ended_event_id(conversation_id: str) -> uuid.UUID:
    """One id per conversation for its end, so every replica and resend makes one close."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"cbd:ended:{conversation_id}")


def _acceptance(event: Envelope) -> dict[str, object]:
    """What a resend of the same client message id gets back."""
    if isinstance(event, TurnReceivedEvent):
        return {
            "turn_id": str(event.payload.message.turn_id),
            "event_id": str(event.event_id),
            "trace_id": event.trace_id,
        }
    return {"event_id": str(event.event_id)}


def _claim_value(event: Envelope, *, published: bool) -> str:
    """What a client message id's claim holds: the acceptance, and the event until published."""
    record = {**_acceptance(event), "published": published}
    if not published:
        record["event"] = event.model_dump_json()
    return json.dumps(record)


def _pending_event(earlier: str) -> tuple[dict[str, str], str | None]:
    """A claim's earlier acceptance, and the event it still holds if never published."""
    if not earlier.startswith("{"):
        # A rating claimed before claims kept their event: its event id alone.
        return {"event_id": earlier}, None
    record = json.loads(earlier)
    pending = record.pop("event", None)
    published = record.pop("published", True)
    return {str(k): str(v) for k, v in record.items()}, None if published else pending


def screen(text: str) -> str:
    """`text` with its sensitive numbers replaced, counted by kind; never logged."""
    result = redact(text)
    for kind, count in result.found.items():
        REDACTED.labels(kind).inc(count)
    return result.text


class Intake:
    """Validates, limits, claims and publishes what customers send, for every channel."""

    def __init__(
        self,
        settings: IngestSettings,
        bus: EventBus,
        redis: aioredis.Redis,
        guard: EdgeGuard,
        owners: Owners,
        replay: TurnReplay | None = None,
        shown: LastShown | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.redis = redis
        self.guard = guard
        self.owners = owners
        self.replay = replay
        """Keeps accepted turns until answered and watches the broker's offsets (None: off)."""
        self.shown = shown
        """The last reply each conversation showed, named on the next turn (None: not named)."""
        self.prefix = settings.redis.key_prefix
        self.bursts = BurstMerger(redis, self.prefix, settings.burst_window_ms, self._burst)
        """Messaging fragments wait here; `bursts.run()` publishes each burst as one turn."""

    async def open(self, conversation_id: str, party: Party, *, ip: str | None = None) -> None:
        """A WebSocket joins a conversation: limit, then claim it or refuse a foreign one."""
        await self.guard.rate_limit(Channel.WEB.value, party.tenant, None, ip)
        await self.owners.claim(conversation_id, party)

    async def message(
        self,
        conversation_id: str,
        party: Party,
        channel: Channel,
        text: str,
        client_message_id: str | None = None,
        *,
        ip: str | None = None,
        limited: bool = False,
    ) -> Accepted:
        """Publish a customer message as turn.received, once per client message id.

        `limited` says the caller already spent this message's rate limits (webhooks do it
        per fragment, before burst merging).
        """
        text = screen(text)
        try:
            if not limited:
                await self.guard.rate_limit(channel.value, party.tenant, party.customer_id, ip)
            await self.owners.claim(conversation_id, party)
            await self._refuse_if_ended(conversation_id)
        except ApiError:
            MESSAGES.labels(channel.value, "rejected").inc()
            raise
        event = TurnReceivedEvent.create(
            conversation_id=conversation_id,
            customer_id=party.customer_id,
            channel=channel,
            tenant=party.tenant,
            payload=TurnReceived(
                message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=utcnow()),
                after_reply_id=(
                    await self.shown.last(conversation_id) if self.shown is not None else None
                ),
            ),
        )
        accepted = Accepted(
            turn_id=str(event.payload.message.turn_id),
            event_id=str(event.event_id),
            trace_id=event.trace_id,
            text=text,
        )
        claim = None
        if client_message_id is not None:
            claim = f"{self.prefix}cmid:{conversation_id}:{client_message_id}"
            earlier = await self._claim_once(claim, _claim_value(event, published=False))
            if earlier is not None:
                MESSAGES.labels(channel.value, "duplicate").inc()
                return await self._earlier(claim, earlier, channel, text)
        if self.replay is not None:
            # Kept before it is published: a replica killed in between leaves it to replay.
            await self.replay.accepted(event)
        try:
            await self._publish(event, claim, "the message")
        except ApiError:
            MESSAGES.labels(channel.value, "broker_error").inc()
            if self.replay is not None:
                await self.replay.forget(event)
            raise
        await self._mark_published(claim, event)
        MESSAGES.labels(channel.value, "accepted").inc()
        return accepted

    async def _earlier(self, claim: str, earlier: str, channel: Channel, text: str) -> Accepted:
        """The first acceptance of a resent message, published now if it never was."""
        record, pending = _pending_event(earlier)
        if pending is not None:
            event = TurnReceivedEvent.model_validate_json(pending)
            await self._republish(event, claim, MESSAGES, channel)
        return Accepted(**record, text=text, duplicate=True)

    async def _republish(
        self, event: Envelope, claim: str, counter: Counter, channel: Channel
    ) -> None:
        """Publish a claimed event whose replica died before the broker had it (or is still
        publishing it): the same event, so nothing the customer sent is lost, and a second copy
        is a redelivery of one id."""
        try:
            if self.replay is not None:
                await self.replay.publish(event)  # watching the offsets for a lost log
            else:
                await self.bus.publish(event)
        except Exception as exc:
            log.exception("could not publish %s", event.event_type)
            counter.labels(channel.value, "broker_error").inc()
            raise ApiError(503, "unavailable", "it could not be recorded; please retry") from exc
        await self._mark_published(claim, event)
        counter.labels(channel.value, "republished").inc()

    async def _mark_published(self, claim: str | None, event: Envelope) -> None:
        """Note that the claimed event reached the broker (a resend then publishes nothing)."""
        if claim is None:
            return
        try:
            await self.redis.set(claim, _claim_value(event, published=True), xx=True, keepttl=True)
        except Exception:
            # Unmarked, a resend publishes the event again under the same id: a redelivery.
            log.warning("could not mark %s published", claim, exc_info=True)

    async def rate(
        self,
        conversation_id: str,
        party: Party,
        channel: Channel,
        rating: int,
        comment: str = "",
        reply_id: uuid.UUID | None = None,
        client_message_id: str | None = None,
        *,
        ip: str | None = None,
        nps: int | None = None,
    ) -> Rated:
        """Publish a customer's rating of their own conversation, once per client message id.

        `nps` (0-10) goes with it when the survey asked, or the answer named it.
        """
        try:
            await self.guard.rate_limit(channel.value, party.tenant, party.customer_id, ip)
            await self.owners.check(conversation_id, party)
        except ApiError:
            FEEDBACK.labels(channel.value, "rejected").inc()
            raise
        event = FeedbackReceivedEvent.create(
            conversation_id=conversation_id,
            customer_id=party.customer_id,
            channel=channel,
            tenant=party.tenant,
            payload=Feedback(
                rating=rating,
                comment=screen(comment),
                source="customer",
                reply_id=reply_id,
                nps=nps,
            ),
        )
        claim = None
        if client_message_id is not None:
            # Under cmid:{conversation}:* so erasing the customer forgets it with the rest.
            claim = f"{self.prefix}cmid:{conversation_id}:rating:{client_message_id}"
            earlier = await self._claim_once(claim, _claim_value(event, published=False))
            if earlier is not None:
                FEEDBACK.labels(channel.value, "duplicate").inc()
                record, pending = _pending_event(earlier)
                if pending is not None:
                    claimed = FeedbackReceivedEvent.model_validate_json(pending)
                    await self._republish(claimed, claim, FEEDBACK, channel)
                return Rated(event_id=record["event_id"], duplicate=True)
        try:
            await self._publish(event, claim, "the rating")
        except ApiError:
            FEEDBACK.labels(channel.value, "broker_error").inc()
            raise
        await self._mark_published(claim, event)
        FEEDBACK.labels(channel.value, "accepted").inc()
        return Rated(event_id=str(event.event_id))

    async def end(
        self,
        conversation_id: str,
        party: Party,
        channel: Channel,
        *,
        ip: str | None = None,
    ) -> Ended:
        """The customer ends their conversation: publish `conversation.closed` (reason `ended`).

        Only the owner may end it (anyone else gets the unknown-conversation 404). The end is
        claimed in Redis for as long as the ownership lasts, so a resend, a second tab or
        another replica gets the first end back, and later messages are refused (409) instead
        of silently reopening a conversation the customer closed. A claim whose publish never
        reached the broker is published by the next attempt, with the same event id.
        """
        try:
            await self.guard.rate_limit(channel.value, party.tenant, party.customer_id, ip)
            await self.owners.check(conversation_id, party)
        except ApiError:
            ENDS.labels(channel.value, "rejected").inc()
            raise
        event = ConversationClosedEvent(
            event_type=ConversationClosedEvent.type_name(),
            event_id=ended_event_id(conversation_id),
            conversation_id=conversation_id,
            customer_id=party.customer_id,
            channel=channel,
            tenant=party.tenant,
            occurred_at=utcnow(),
            trace_id=new_trace_id(),
            payload=ConversationClosed(reason=CloseReason.ENDED),
        )
        claim = self._ended_key(conversation_id)
        try:
            claimed = await self.redis.set(
                claim, _claim_value(event, published=False), nx=True, ex=self.settings.owner_ttl_s
            )
            earlier = None if claimed else await self.redis.get(claim)
        except Exception as exc:
            log.warning("end of chat cannot be recorded", exc_info=True)
            ENDS.labels(channel.value, "unavailable").inc()
            raise ApiError(503, "unavailable", "the chat could not be ended; please retry") from exc
        if earlier is not None:
            ENDS.labels(channel.value, "duplicate").inc()
            record, pending = _pending_event(str(earlier))
            if pending is not None:
                claimed_event = ConversationClosedEvent.model_validate_json(pending)
                await self._republish(claimed_event, claim, ENDS, channel)
            return Ended(event_id=record["event_id"], duplicate=True)
        try:
            await self._publish(event, claim, "the end of the chat")
        except ApiError:
            ENDS.labels(channel.value, "broker_error").inc()
            raise
        await self._mark_published(claim, event)
        ENDS.labels(channel.value, "accepted").inc()
        return Ended(event_id=str(event.event_id))

    def _ended_key(self, conversation_id: str) -> str:
        return self.prefix + ENDED_TEMPLATE.format(conversation=conversation_id)

    async def _refuse_if_ended(self, conversation_id: str) -> None:
        """409 for a message in a conversation its customer ended (Redis down: 503)."""
        try:
            ended = await self.redis.exists(self._ended_key(conversation_id))
        except Exception as exc:
            log.warning("end-of-chat record unavailable", exc_info=True)
            raise ApiError(
                503, "unavailable", "the conversation cannot be checked now; try again"
            ) from exc
        if ended:
            raise conversation_ended()

    async def fragment(
        self,
        conversation_id: str,
        party: Party,
        channel: Channel,
        text: str,
        message_id: str,
        *,
        ip: str | None = None,
    ) -> None:
        """A messaging fragment: limited now, parked (already redacted) for burst merging."""
        await self.guard.rate_limit(channel.value, party.tenant, party.customer_id, ip)
        await self.owners.claim(conversation_id, party)
        await self.bursts.add(
            conversation_id, party.customer_id, channel, screen(without_controls(text)), message_id
        )

    async def _burst(
        self,
        conversation_id: str,
        customer_id: str,
        channel: Channel,
        text: str,
        message_id: str,
    ) -> Accepted:
        """A merged burst becomes one turn (its fragments were limited when they came)."""
        party = Party(self.settings.messaging_tenant, customer_id)
        return await self.message(conversation_id, party, channel, text, message_id, limited=True)

    async def _publish(self, event: Envelope, claim: str | None, what: str) -> None:
        """Publish; on failure release the client message id, so the client's retry is new."""
        try:
            if self.replay is not None:
                await self.replay.publish(event)  # watching the offsets for a lost log
            else:
                await self.bus.publish(event)
        except Exception as exc:
            log.exception("could not publish %s", event.event_type)
            if claim is not None:
                try:
                    await self.redis.delete(claim)
                except Exception:
                    log.warning("could not release %s", claim, exc_info=True)
            raise ApiError(
                503, "unavailable", f"{what} could not be recorded; please retry"
            ) from exc

    async def _claim_once(self, key: str, value: str) -> str | None:
        """Set `key` unless it exists; return the earlier value when it did."""
        try:
            if await self.redis.set(key, value, nx=True, ex=DEDUPE_TTL_S):
                return None
            earlier = await self.redis.get(key)
        except Exception:
            # Without Redis a resend may be taken twice; refusing the customer is worse.
            log.warning("deduplication unavailable; accepting without it", exc_info=True)
            return None
        return None if earlier is None else str(earlier)
