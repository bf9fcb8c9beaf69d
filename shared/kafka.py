"""Kafka plumbing: one broker factory, one way to publish, one way to consume.

Delivery is at-least-once. A subscriber commits only after its handler finished (or after the
message went to the dead-letter topic), so a service killed mid-message sees it again when it
comes back. A message that cannot be processed is retried a bounded number of times and then
dead-lettered with the reason; a partition never stalls behind a poison message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import RecordMetadata
from faststream import AckPolicy, ContextRepo
from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.message import StreamMessage
from faststream.middlewares import BaseMiddleware
from faststream.security import (
    BaseSecurity,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)
from pydantic import ValidationError

from shared import metrics
from shared.events import DeadLetter, Envelope, utcnow
from shared.logging import log_context
from shared.settings import KafkaSettings
from shared.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Envelope)


class PermanentError(Exception):
    """A handler's way of saying retrying cannot help: dead-letter this message now."""


class BrokerUnavailable(ConnectionError):
    """The broker is known to be down: publishing now would only wait for a timeout."""


# Infrastructure trouble that a later attempt may not see: the message is not at fault, so it
# is redelivered rather than dead-lettered. Anything else is the message's own problem.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OSError,
    KafkaError,
)


def client_security(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka's connection-security arguments (TLS, SASL) for plain aiokafka clients."""
    if settings.security_protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.endswith("SSL"):
        kwargs["ssl_context"] = create_ssl_context(cafile=settings.ssl_cafile)
    if settings.security_protocol.startswith("SASL_"):
        assert settings.sasl_password is not None  # KafkaSettings refuses SASL without one
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def broker_security(settings: KafkaSettings) -> BaseSecurity | None:
    """The same connection security as FastStream's security object (None: plaintext)."""
    if settings.security_protocol == "PLAINTEXT":
        return None
    tls = settings.security_protocol.endswith("SSL")
    context = create_ssl_context(cafile=settings.ssl_cafile) if tls else None
    if not settings.security_protocol.startswith("SASL_"):
        return BaseSecurity(ssl_context=context, use_ssl=True)
    assert settings.sasl_username is not None
    assert settings.sasl_password is not None
    sasl = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}
    return sasl[settings.sasl_mechanism](
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=tls,
    )


def make_broker(settings: KafkaSettings, client_id: str) -> KafkaBroker:
    """A broker connection for one service process."""
    return KafkaBroker(
        settings.bootstrap_servers,
        security=broker_security(settings),
        client_id=client_id,
        request_timeout_ms=settings.request_timeout_ms,
        # Idempotent producers need InitProducerId, which the embedded broker lacks; duplicates
        # are handled downstream by deterministic event ids instead.
        enable_idempotence=False,
        acks="all",
        log_level=logging.DEBUG,
    )


async def ensure_topics(settings: KafkaSettings, topics: tuple[Topic, ...] = ALL_TOPICS) -> None:
    """Create the platform's topics with the configured partitions if they are missing."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        request_timeout_ms=settings.request_timeout_ms,
        **client_security(settings),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(settings.topic(t), settings.partitions, settings.replication_factor)
            for t in topics
            if settings.topic(t) not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.debug("another service created the topics first")
    finally:
        await admin.close()


class BrokerWatch:
    """Whether the broker answers right now, checked in the background.

    While the broker is down, publishing fails at once with `BrokerUnavailable` (so ingest
    answers 503 at once instead of holding the customer for the producer's request timeout),
    and before a message is handed to the producer, so a refused message is never sent later
    behind the caller's back. When the broker is back, missing topics are created again (a
    broker that lost its storage); the clients reconnect by themselves.
    """

    def __init__(
        self,
        broker: KafkaBroker,
        settings: KafkaSettings,
        *,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.up = True
        self.since = time.monotonic()
        self.outages = 0
        """How many times the broker was seen going down (ingest replays what it held)."""

    async def check(self) -> bool:
        """Ping the broker once and record the outcome; True when it answered."""
        try:
            answered = bool(await self.broker.ping(timeout=self.timeout_s))
        except Exception:
            answered = False
        if answered != self.up:
            self.up = answered
            self.since = time.monotonic()
            if answered:
                log.warning("broker is back")
                await self._recreate_topics()
            else:
                self.outages += 1
                log.warning("broker is down: publishing is refused until it is back")
        return answered

    async def _recreate_topics(self) -> None:
        if not self.settings.create_topics:
            return
        try:
            await ensure_topics(self.settings)
        except Exception as exc:
            log.warning("could not re-create topics: %r", exc)

    async def run(self) -> None:
        """Check forever (run it as a task; cancel it to stop)."""
        while True:
            await self.check()
            # Look again sooner while down, so publishing resumes soon after the broker does.
            await asyncio.sleep(self.interval_s if self.up else self.interval_s / 4)


class EventBus:
    """Publishes events on the platform's topics, keyed by conversation for ordering."""

    def __init__(
        self,
        broker: KafkaBroker,
        settings: KafkaSettings,
        service: str,
        watch: BrokerWatch | None = None,
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.service = service
        self.watch = watch

    def _refuse_if_down(self) -> None:
        if self.watch is not None and not self.watch.up:
            raise BrokerUnavailable("the event broker is unavailable")

    async def publish(self, event: Envelope, /, *, confirm: bool = True) -> RecordMetadata | None:
        """Publish one event on its type's topic; with `confirm` wait until the broker has it.

        The topic is derived from the event's type (`Topic.for_event`), so the two cannot
        disagree. Raises `BrokerUnavailable` at once while the broker is known to be down.
        Returns where the broker put it (partition, offset) when confirmed: ingest watches
        those offsets to notice a broker that came back without its log.
        """
        topic = Topic.for_event(event)
        self._refuse_if_down()
        sent = await self.broker.publish(
            event.model_dump_json().encode(),
            topic=self.settings.topic(topic),
            key=event.conversation_id.encode(),
            headers={
                "content-type": "application/json",
                "event-type": event.event_type,
                "schema-version": str(event.schema_version),
                "trace-id": event.trace_id,
            },
            no_confirm=not confirm,
        )
        metrics.EVENTS_PUBLISHED.labels(self.service, topic.value).inc()
        return sent if isinstance(sent, RecordMetadata) else None

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Send an unprocessable message, with its reason, to the dead-letter topic."""
        self._refuse_if_down()
        await self.broker.publish(
            letter.model_dump_json().encode(),
            topic=self.settings.topic(Topic.DEAD_LETTER),
            key=letter.key.encode() if letter.key else None,
            headers={"content-type": "application/json", "event-type": letter.event_type},
        )
        metrics.EVENTS_PUBLISHED.labels(self.service, Topic.DEAD_LETTER.value).inc()


@dataclass(frozen=True)
class ConsumerSpec:
    """How one service consumes one topic."""

    service: str
    group_id: str
    attempts: int = 3
    retry_backoff_s: float = 0.2
    redelivery_backoff_s: float = 1.0


def _raw_payload(body: bytes) -> tuple[str, str]:
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def event_decoder(model: type[E]) -> Callable[[StreamMessage[Any]], Awaitable[E]]:
    """FastStream's decoder for one subscription: the body, validated into `model`.

    Validating the raw bytes (not FastStream's `json.loads` result) keeps pydantic's own
    reason for a body that is not JSON at all, and makes decoding the one step that can
    reject the message itself: `Delivery` decodes before the handler runs, so a
    `ValidationError` there is the message's fault and one from the handler is not.
    """

    async def decode(msg: StreamMessage[Any]) -> E:
        return model.model_validate_json(msg.body)

    return decode


class Delivery:
    """Retries and dead-lettering for one subscription, as a FastStream middleware factory.

    FastStream builds one `DeliveryMiddleware` per message from it (it is what a router's
    `middlewares=` takes), so the policy, the bus and the topic are bound once here. What it
    does with a message:

    - a body that is not a valid event: dead-lettered at once with pydantic's reason;
    - `PermanentError` from the handler: dead-lettered at once;
    - `TRANSIENT_ERRORS`: retried with backoff; if still failing, re-raised after a pause so
      the offset stays uncommitted (`AckPolicy.NACK_ON_ERROR`) and the message comes back;
    - any other exception: retried with backoff, then dead-lettered with the last error.

    If even the dead-letter publish fails, that error propagates and the message is
    redelivered instead of being committed unprocessed.
    """

    def __init__(self, bus: EventBus, *, topic: Topic, topic_name: str, spec: ConsumerSpec) -> None:
        self.bus = bus
        self.topic = topic
        self.topic_name = topic_name
        self.spec = spec

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> DeliveryMiddleware:
        """FastStream's middleware-builder call: one middleware for one received message."""
        return DeliveryMiddleware(msg, context=context, delivery=self)

    async def dead_letter(
        self, msg: StreamMessage[Any], reason: str, error_type: str, attempts: int
    ) -> None:
        """Publish `msg` with its reason to the dead-letter topic and count it."""
        spec, topic = self.spec, self.topic
        record = msg.raw_message
        payload, encoding = _raw_payload(msg.body)
        await self.bus.dead_letter(
            DeadLetter(
                source_topic=self.topic_name,
                partition=record.partition,
                offset=record.offset,
                key=record.key.decode("utf-8", "replace") if record.key else None,
                service=spec.service,
                consumer_group=spec.group_id,
                reason=reason[:2000],
                error_type=error_type,
                attempts=attempts,
                payload=payload,
                payload_encoding=encoding,
            )
        )
        metrics.DEAD_LETTERS.labels(spec.service, topic.value, error_type).inc()
        metrics.EVENTS_CONSUMED.labels(spec.service, topic.value, "dead_lettered").inc()
        log.warning(
            "dead-lettered %s[%s]@%s: %s",
            self.topic_name,
            record.partition,
            record.offset,
            reason,
        )


class DeliveryMiddleware(BaseMiddleware):
    """One message's pass through `Delivery` (FastStream's `consume_scope` around the handler)."""

    def __init__(self, msg: Any, /, *, context: ContextRepo, delivery: Delivery) -> None:
        super().__init__(msg, context=context)
        self.delivery = delivery

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        """Decode, then run the handler (`call_next`) under the retry policy."""
        delivery = self.delivery
        try:
            # Cached by the message: the handler's own decoding reuses this result.
            event = await msg.decode()
        except ValidationError as exc:
            await delivery.dead_letter(msg, _describe_validation(exc), "ValidationError", 1)
            return None
        if not isinstance(event, Envelope):
            raise TypeError(f"{delivery.topic_name} is not decoded by event_decoder")
        metrics.EVENT_AGE_SECONDS.labels(delivery.spec.service, delivery.topic.value).observe(
            max(0.0, (utcnow() - event.occurred_at).total_seconds())
        )
        with log_context(
            trace_id=event.trace_id,
            conversation_id=event.conversation_id,
            event_id=str(event.event_id),
        ):
            return await self._with_retries(call_next, msg)

    async def _with_retries(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        delivery = self.delivery
        spec, topic = delivery.spec, delivery.topic
        started = time.perf_counter()
        for attempt in range(1, spec.attempts + 1):
            try:
                result = await call_next(msg)
            except PermanentError as exc:
                await delivery.dead_letter(msg, str(exc), type(exc).__name__, attempt)
                return None
            except TRANSIENT_ERRORS as exc:
                if attempt < spec.attempts:
                    metrics.HANDLER_RETRIES.labels(spec.service, topic.value).inc()
                    await asyncio.sleep(spec.retry_backoff_s * 2 ** (attempt - 1))
                    continue
                # Infrastructure still down: leave the offset uncommitted so the message
                # comes back, after a pause, instead of blaming the message for it.
                metrics.EVENTS_CONSUMED.labels(spec.service, topic.value, "redelivered").inc()
                log.warning("infrastructure error, will redeliver: %r", exc)
                await asyncio.sleep(spec.redelivery_backoff_s)
                raise
            except Exception as exc:
                if attempt < spec.attempts:
                    metrics.HANDLER_RETRIES.labels(spec.service, topic.value).inc()
                    log.info("attempt %d failed: %r", attempt, exc)
                    await asyncio.sleep(spec.retry_backoff_s * 2 ** (attempt - 1))
                    continue
                await delivery.dead_letter(
                    msg, f"{type(exc).__name__}: {exc}", type(exc).__name__, attempt
                )
                return None
            else:
                metrics.HANDLE_SECONDS.labels(spec.service, topic.value).observe(
                    time.perf_counter() - started
                )
                metrics.EVENTS_CONSUMED.labels(spec.service, topic.value, "ok").inc()
                return result
        return None


def subscribe(
    broker: KafkaBroker,
    bus: EventBus,
    *,
    settings: KafkaSettings,
    topic: Topic,
    model: type[E],
    handler: Callable[[E], Awaitable[None]],
    spec: ConsumerSpec,
    fetch_max_wait_ms: int | None = None,
) -> None:
    """Register `handler` for `topic`: typed decoding, bounded retries and dead-lettering.

    `fetch_max_wait_ms` overrides the settings' fetch wait for this subscription.

    The subscription lives on its own router, because FastStream 0.7 scopes middlewares to
    a broker or a router (a subscriber takes none): `Delivery` then wraps this handler only,
    not the other subscribers on the broker (audit's raw tap, tests' captures).
    """
    topic_name = settings.topic(topic)
    router = KafkaRouter(middlewares=[Delivery(bus, topic=topic, topic_name=topic_name, spec=spec)])

    async def consume(event: Envelope) -> None:
        await handler(cast(E, event))

    # FastStream reads the payload type from the annotation, for the AsyncAPI document (and
    # checks the decoded event against it); the handler's docstring describes the operation.
    consume.__annotations__ = {"event": model, "return": None}
    consume.__doc__ = handler.__doc__
    router.subscriber(
        topic_name,
        group_id=spec.group_id,
        auto_offset_reset="earliest",
        decoder=event_decoder(model),
        # NACK only when even the dead-letter publish failed or the infrastructure stayed
        # down: the message is then redelivered instead of being committed unprocessed.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        fetch_max_wait_ms=fetch_max_wait_ms or settings.fetch_max_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        group_instance_id=settings.group_instance_id(spec.group_id),
        title=f"{spec.service}:{topic.value}",
    )(consume)
    broker.include_router(router)
