"""The shape every service shares: a FastAPI app around a FastStream broker.

`build_app` gives each service `/metrics` (on the main port, or on `metrics_port` alone when
that is set), a liveness probe (`/livez`, checks nothing
external), a readiness probe (`/readyz`, checks broker, database and cache), the shared error
handling and body limit (`shared.http`), its routers, and a lifespan that opens the clients,
applies migrations, wires the handlers, starts consuming, hands the routes what they need
(`Infra.provide`, read with `shared.http.requires`), and closes everything again in reverse
order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import db, http, lag, rewind
from shared.events import Envelope
from shared.kafka import BrokerWatch, ConsumerSpec, EventBus, ensure_topics, make_broker, subscribe
from shared.logging import configure_logging
from shared.metrics import serving_metrics
from shared.settings import ServiceSettings
from shared.topics import Topic

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Envelope)


# Topics no customer waits on: their consumers poll with the background fetch wait.
BACKGROUND_TOPICS = frozenset(
    {Topic.CUSTOMER_ERASED, Topic.FEEDBACK_RECEIVED, Topic.REVIEW_SUBMITTED}
)


@dataclass
class Infra:
    """The clients a service's handlers work with, opened in the lifespan and passed in."""

    service: str
    settings: ServiceSettings
    broker: KafkaBroker
    bus: EventBus
    pg: db.Pool | None = None
    redis: aioredis.Redis | None = None
    provided: list[tuple[object, type[Any] | None]] = field(default_factory=list)

    def provide(self, value: object, *, as_: type[Any] | None = None) -> None:
        """Hand `value` to the HTTP routes (`shared.http.requires`) once the service is up."""
        self.provided.append((value, as_))

    def subscribe(
        self, topic: Topic, model: type[E], handler: Callable[[E], Awaitable[None]]
    ) -> None:
        """Consume `topic` in this service's consumer group (less eager off the reply path)."""
        kafka = self.settings.kafka
        subscribe(
            self.broker,
            self.bus,
            settings=self.settings.kafka,
            topic=topic,
            model=model,
            handler=handler,
            spec=ConsumerSpec(
                service=self.service,
                # Named after the prefixed topic: deployments that share a broker under
                # different prefixes (and tests) never join each other's groups.
                group_id=f"cbd-{self.service}.{self.settings.kafka.topic(topic)}",
                attempts=self.settings.handler_attempts,
            ),
            fetch_max_wait_ms=(
                kafka.background_fetch_max_wait_ms if topic in BACKGROUND_TOPICS else None
            ),
        )

    def require_pg(self) -> db.Pool:
        """The database pool; a service that asked for one always has it after start-up."""
        if self.pg is None:
            raise RuntimeError(f"{self.service} was built without PostgreSQL")
        return self.pg

    def require_redis(self) -> aioredis.Redis:
        """The Redis client; a service that asked for one always has it after start-up."""
        if self.redis is None:
            raise RuntimeError(f"{self.service} was built without Redis")
        return self.redis


Wire = Callable[[Infra, AsyncExitStack], Awaitable[None]]
"""Registers a service's handlers; may push its own clean-ups onto the exit stack."""


@dataclass(frozen=True)
class ServiceSpec:
    """What a service needs from the platform scaffolding."""

    name: str
    settings: ServiceSettings
    wire: Wire
    uses_postgres: bool = False
    uses_redis: bool = False
    migrations: Path | None = None
    routers: Sequence[APIRouter] = ()
    max_body_bytes: int = 64 * 1024
    refusals: Mapping[type[Exception], http.Refusal] = field(default_factory=dict)
    description: str = ""


def redis_client(url: str, *, max_connections: int = 100, wait_s: float = 2.0) -> aioredis.Redis:
    """A Redis client that survives a Redis restart and a burst of concurrent commands.

    After a restart every pooled connection is dead; without retries (which `from_url` does
    not set up) the first command on each fails. Retrying connection errors reconnects.

    redis-py's default pool fails a command at once (`MaxConnectionsError`) when all of its
    100 connections are in use. At the edge a reconnect storm (every customer's socket back
    at once after ingest restarts) does that: in a chaos run at 10 turns/s ingest hit it 855
    times, could not claim or settle replies, and 14 replies never reached their customer.
    A blocking pool makes such a command wait up to `wait_s` for a connection instead (and
    up to three times more, as the retries treat a wait that ran out as a connection error).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_s,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)


async def _retry(what: str, attempt: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
    """Keep trying a start-up step while its server comes up, then give up loudly."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} unavailable after {timeout_s:.0f}s: {exc!r}") from exc
            log.info("waiting for %s: %r", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def start_consuming(broker: KafkaBroker) -> None:
    """`KafkaBroker.start`, with every subscription joining its consumer group at once.

    FastStream starts subscribers one after another, and aiokafka's `start` waits until the
    group has assigned partitions: a service with N subscriptions (one group each) took N
    group joins to start, about 2 s each on the embedded broker at 3 s sessions (audit has six).
    Started together they take about one. Same steps as FastStream 0.7's `start` otherwise.
    """
    await broker.connect()
    await asyncio.gather(*(subscriber.start() for subscriber in broker.subscribers))
    for publisher in broker.publishers:
        await publisher.start()
    broker.running = True


def build_app(spec: ServiceSpec, *, startup_timeout_s: float = 60.0) -> FastAPI:
    """The ASGI app for one service."""
    settings = spec.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(spec.name, settings.log_level, settings.log_format)
        async with AsyncExitStack() as stack:
            if settings.metrics_port is not None:
                await stack.enter_async_context(
                    serving_metrics(settings.host, settings.metrics_port)
                )
            if settings.kafka.create_topics:
                await _retry("kafka", lambda: ensure_topics(settings.kafka), startup_timeout_s)
            broker = make_broker(settings.kafka, client_id=f"cbd-{spec.name}")
            watch = BrokerWatch(broker, settings.kafka)
            infra = Infra(
                service=spec.name,
                settings=settings,
                broker=broker,
                bus=EventBus(broker, settings.kafka, spec.name, watch),
            )
            if spec.uses_postgres:
                infra.pg = await _retry(
                    "postgres", lambda: db.create_pool(settings.postgres), startup_timeout_s
                )
                stack.push_async_callback(infra.pg.close)
                if spec.migrations is not None:
                    await db.migrate(infra.pg, spec.name, spec.migrations)
            if spec.uses_redis:
                infra.redis = redis_client(
                    settings.redis.url.get_secret_value(),
                    max_connections=settings.redis.max_connections,
                    wait_s=settings.redis.pool_wait_s,
                )
                stack.push_async_callback(infra.redis.aclose)
                await _retry("redis", infra.redis.ping, startup_timeout_s)
            await spec.wire(infra, stack)
            await _retry("kafka", lambda: start_consuming(broker), startup_timeout_s)
            stack.push_async_callback(broker.stop)
            # Broker restarts: refuse publishes while it is down, re-create topics after.
            watching = asyncio.create_task(watch.run(), name="broker-watch")
            stack.callback(watching.cancel)
            # Consumer lag on /metrics for dashboards and alerts (KEDA reads it from the broker).
            await stack.enter_async_context(lag.exporting(spec.name, broker))
            # A broker back without its log: consumers past its end start it over.
            await stack.enter_async_context(rewind.rewinding(spec.name, broker))
            # Routes see the clients only now, when everything they use has started; until
            # then (and again once stopping) they answer 503.
            provided: list[tuple[object, type[Any] | None]] = [
                (infra, None),
                (infra.bus, None),
                (http.Readiness(lambda: readiness_checks(infra)), None),
                *infra.provided,
            ]
            for value, kind in provided:
                http.provide(app, value, as_=kind)
            stack.callback(http.withdraw, app, [kind or type(value) for value, kind in provided])
            log.info("%s ready on %s:%s", spec.name, settings.host, settings.port)
            yield
            log.info("%s stopping", spec.name)

    app = FastAPI(
        title=f"Care-by-Design {spec.name}",
        description=spec.description,
        version="1",
        lifespan=lifespan,
    )
    http.install(app, max_body_bytes=spec.max_body_bytes, refusals=spec.refusals)
    app.include_router(http.ops_router(spec.name, with_metrics=settings.metrics_port is None))
    app.include_router(_asyncapi_router(spec))
    for router in spec.routers:
        app.include_router(router)
    return app


def asyncapi_document(infra: Infra, description: str = "") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the service's subscriptions, generated by FastStream.

    Each subscriber is typed with its event model (`shared.kafka.subscribe`), so FastStream
    documents every channel's payload schema itself.
    """
    document: dict[str, Any] = (
        AsyncAPI(
            infra.broker,
            title=f"Care-by-Design {infra.service}",
            version="1",
            description=description or None,
        )
        .to_specification()
        .to_jsonable()
    )
    return document


def _asyncapi_router(spec: ServiceSpec) -> APIRouter:
    """`/asyncapi.json`: the service's event side (available once started)."""
    router = APIRouter(tags=["operations"])

    @router.get("/asyncapi.json", responses=http.error_responses(503))
    async def asyncapi(
        infra: Annotated[Infra, Depends(http.requires(Infra))],
    ) -> dict[str, Any]:
        """The AsyncAPI 3.0 document of the topics this service consumes and their events."""
        return asyncapi_document(infra, spec.description)

    return router


async def readiness_checks(infra: Infra, timeout_s: float = 2.0) -> dict[str, str]:
    """Probe each dependency the service uses; 'ok' or a short reason per dependency."""

    async def check(probe: Callable[[], Awaitable[Any]]) -> str:
        try:
            # Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives
            # as a probe answers at once, and a probe loop would then never stop.
            async with asyncio.timeout(timeout_s):
                result = await probe()
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "ok" if result is not False else "error: no answer"

    async def pg_probe() -> Any:
        assert infra.pg is not None
        return await infra.pg.fetchval("SELECT 1")

    probes: dict[str, Callable[[], Awaitable[Any]]] = {
        "kafka": lambda: infra.broker.ping(timeout=timeout_s)
    }
    if infra.pg is not None:
        probes["postgres"] = pg_probe
    if infra.redis is not None:
        probes["redis"] = infra.redis.ping
    names = list(probes)
    results = await asyncio.gather(*(check(probes[n]) for n in names))
    return dict(zip(names, results, strict=True))
