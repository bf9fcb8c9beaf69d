"""Transactional outbox: a state change and the message that must follow it commit together.

A service that must tell the world about a commit (memory's erasure → `customer.erased`,
escalation's ownership moves → the Redis mirror generation reads) writes the message into its
own `<schema>.outbox` table in the same transaction as the change. After the commit it
delivers the message at once (`deliver_now`) and deletes the row; if that fails (broker or
Redis down, process killed), the row stays and the relay (`run`, one per replica, rows locked
with SKIP LOCKED so replicas never deliver the same row together) delivers it later. Delivery
is therefore at-least-once, and every deliverer is idempotent: events keep their id, the
ownership mirror only moves forward in epoch.

Each owning service creates the table in a migration of its own:

    CREATE TABLE <schema>.outbox (
        id bigserial PRIMARY KEY, kind text NOT NULL, key text NOT NULL,
        payload text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
        attempts integer NOT NULL DEFAULT 0, last_error text);
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from shared.db import Pool
from shared.events import Envelope
from shared.kafka import EventBus

log = logging.getLogger(__name__)

RELAYED = Counter(
    "cbd_outbox_delivered_total",
    "Outbox messages delivered, by kind and path (immediate after the commit, or by the relay).",
    ["service", "kind", "path"],
)
FAILED = Counter(
    "cbd_outbox_failures_total",
    "Outbox deliveries that failed and were left for the relay to retry.",
    ["service", "kind"],
)
PENDING = Gauge(
    "cbd_outbox_pending",
    "Outbox messages waiting for delivery, as the relay last counted them.",
    ["service"],
)

EVENT = "event"
"""The kind of an outbox message that is an event to publish."""

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Message:
    """One outbox row."""

    id: int
    kind: str
    key: str
    payload: str
    attempts: int = 0


Deliver = Callable[[Message], Awaitable[None]]
"""Sends one message on; raises when it could not (the row then stays for the relay)."""


def publishing(bus: EventBus, *models: type[Envelope]) -> Deliver:
    """A deliverer for `EVENT` messages: publish the stored event (same id) on its topic."""
    by_type = {model.type_name(): model for model in models}

    async def deliver(message: Message) -> None:
        event_type = message.key.partition("|")[0]
        model = by_type.get(event_type)
        if model is None:
            raise ValueError(f"no event model for {event_type!r} in the outbox")
        await bus.publish(model.model_validate_json(message.payload))

    return deliver


class Outbox:
    """A service's outbox table, its immediate delivery and its relay."""

    def __init__(
        self,
        pool: Pool,
        schema: str,
        deliverers: Mapping[str, Deliver],
        *,
        service: str,
        relay_interval_s: float = 1.0,
        relay_after_s: float = 2.0,
        batch: int = 100,
    ) -> None:
        if not _SCHEMA.match(schema):
            raise ValueError(f"not a schema name: {schema!r}")
        self.pool = pool
        self.table = f"{schema}.outbox"
        self.deliverers = dict(deliverers)
        self.service = service
        self.relay_interval_s = relay_interval_s
        self.relay_after_s = relay_after_s
        self.batch = batch

    async def add(self, conn: Any, kind: str, key: str, payload: str) -> Message:
        """Write a message in the caller's transaction; it is delivered once that commits."""
        if kind not in self.deliverers:
            raise ValueError(f"no deliverer for outbox messages of kind {kind!r}")
        row_id: int = await conn.fetchval(
            f"INSERT INTO {self.table} (kind, key, payload) VALUES ($1, $2, $3) RETURNING id",  # noqa: S608 (checked schema name)
            kind,
            key,
            payload,
        )
        return Message(row_id, kind, key, payload)

    async def add_event(self, conn: Any, event: Envelope) -> Message:
        """Write an event to publish once the caller's transaction commits."""
        return await self.add(
            conn, EVENT, f"{event.event_type}|{event.event_id}", event.model_dump_json()
        )

    async def deliver_now(self, messages: Sequence[Message]) -> bool:
        """Deliver messages just committed and delete them; False if one is left for the relay.

        Never raises for a failed delivery: the commit stands, and the relay retries.
        """
        delivered: list[int] = []
        ok = True
        for message in messages:
            try:
                await self.deliverers[message.kind](message)
            except Exception as exc:
                FAILED.labels(self.service, message.kind).inc()
                log.warning("outbox %s #%d left for the relay: %r", message.kind, message.id, exc)
                ok = False
                continue
            RELAYED.labels(self.service, message.kind, "immediate").inc()
            delivered.append(message.id)
        if delivered:
            try:
                await self.pool.execute(
                    f"DELETE FROM {self.table} WHERE id = ANY($1::bigint[])",  # noqa: S608
                    delivered,
                )
            except Exception:
                # Delivered but not cleared: the relay delivers them again, which is harmless.
                log.warning("outbox rows %s delivered but not cleared", delivered, exc_info=True)
        return ok

    async def relay_once(self, *, older_than_s: float | None = None) -> int:
        """Deliver waiting messages (oldest first) and clear them; return how many went out.

        Only rows older than `older_than_s` (default `relay_after_s`) are taken, so the relay
        does not race the immediate delivery of a row that was just committed.
        """
        after = self.relay_after_s if older_than_s is None else older_than_s
        sent = 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT id, kind, key, payload, attempts FROM {self.table} "  # noqa: S608
                "WHERE created_at <= now() - make_interval(secs => $1) "
                "ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                after,
                self.batch,
            )
            for row in rows:
                message = Message(**dict(row))
                deliver = self.deliverers.get(message.kind)
                try:
                    if deliver is None:
                        raise ValueError(f"no deliverer for {message.kind!r}")
                    await deliver(message)
                except Exception as exc:
                    FAILED.labels(self.service, message.kind).inc()
                    await conn.execute(
                        f"UPDATE {self.table} SET attempts = attempts + 1, last_error = $2 "  # noqa: S608
                        "WHERE id = $1",
                        message.id,
                        f"{type(exc).__name__}: {exc}"[:1000],
                    )
                    # Whatever failed (a broker or Redis outage) would fail the rest too;
                    # they wait for the next pass, in order.
                    break
                await conn.execute(f"DELETE FROM {self.table} WHERE id = $1", message.id)  # noqa: S608
                RELAYED.labels(self.service, message.kind, "relay").inc()
                sent += 1
        return sent

    async def pending(self) -> int:
        """Messages waiting for delivery."""
        count: int = await self.pool.fetchval(f"SELECT count(*) FROM {self.table}")  # noqa: S608
        return count

    async def run(self) -> None:
        """Relay until cancelled; a database outage is logged and waited out."""
        while True:
            try:
                await self.relay_once()
                PENDING.labels(self.service).set(await self.pending())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox relay pass failed", exc_info=True)
            await asyncio.sleep(self.relay_interval_s)


@contextlib.asynccontextmanager
async def relaying(outbox: Outbox) -> AsyncIterator[Outbox]:
    """Run the outbox's relay for the duration of the block (a service's lifespan)."""
    task = asyncio.create_task(outbox.run(), name=f"outbox-{outbox.table}")
    try:
        yield outbox
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
