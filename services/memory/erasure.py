"""Right to erasure: delete what memory holds and, in the same transaction, the event and receipt.

`customer.erased` tells emotion, ingest, escalation and audit to delete what they hold. It is
written to memory's outbox in the transaction that deletes the customer, so the erasure and
its event commit together: if the broker is down the DELETE still succeeds and the relay
publishes the event when it can. A receipt (counts and the event id, no content) makes a
retried DELETE answer exactly as the first one did; it is keyed by a hash of the customer id,
so nothing left in memory names the erased customer.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from services.memory.customers import CustomerStore
from shared.events import DEFAULT_TENANT, Channel, CustomerErased, CustomerErasedEvent, utcnow
from shared.outbox import Outbox


@dataclass(frozen=True)
class Receipt:
    """What an erasure did, as the admin API reports it."""

    customer_id: str
    erasure_event_id: uuid.UUID
    identities: int
    conversations: int


class Eraser:
    """Carries out erasures through the customer store and the outbox."""

    def __init__(self, store: CustomerStore, outbox: Outbox) -> None:
        self.store = store
        self.outbox = outbox

    async def erase(
        self, customer_id: str, requested_by: str, *, tenant: str = DEFAULT_TENANT
    ) -> Receipt | None:
        """Erase the customer; the earlier receipt if they were erased before; None if unknown."""
        written: list[tuple[Receipt, Any]] = []

        async def record(conn: Any, identities: list[str], conversations: list[str]) -> None:
            event = CustomerErasedEvent.create(
                # Keyed by a random id: the customer's own id is what must go.
                conversation_id=f"erasure-{uuid.uuid4().hex}",
                customer_id=customer_id,
                channel=Channel.API,
                tenant=tenant,
                payload=CustomerErased(
                    erased_customer_id=customer_id,
                    identities=identities,
                    conversation_ids=conversations,
                    requested_by=requested_by,
                    requested_at=utcnow(),
                ),
            )
            message = await self.outbox.add_event(conn, event)
            receipt = Receipt(customer_id, event.event_id, len(identities), len(conversations))
            await conn.execute(
                """
                INSERT INTO memory.erasures (customer_key, erasure_event_id, identities,
                    conversations, requested_by, tenant)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (tenant, customer_key) DO UPDATE SET
                    erasure_event_id = EXCLUDED.erasure_event_id,
                    identities = EXCLUDED.identities,
                    conversations = EXCLUDED.conversations,
                    requested_by = EXCLUDED.requested_by,
                    erased_at = now()
                """,
                receipt_key(customer_id),
                event.event_id,
                receipt.identities,
                receipt.conversations,
                requested_by,
                tenant,
            )
            written.append((receipt, message))

        if await self.store.erase(customer_id, record, tenant=tenant) is None:
            return await self.receipt(customer_id, tenant=tenant)
        receipt, message = written[0]
        # Published now if the broker takes it; otherwise the relay does, later.
        await self.outbox.deliver_now([message])
        return receipt

    async def receipt(self, customer_id: str, *, tenant: str = DEFAULT_TENANT) -> Receipt | None:
        """The receipt of the tenant's customer's last erasure, if they were erased."""
        row = await self.store.pg.fetchrow(
            "SELECT erasure_event_id, identities, conversations "
            "FROM memory.erasures WHERE tenant = $1 AND customer_key = $2",
            tenant,
            receipt_key(customer_id),
        )
        return Receipt(customer_id, **dict(row)) if row is not None else None


def receipt_key(customer_id: str) -> str:
    """How a receipt is found: the SHA-256 of the customer id, so no receipt names anyone."""
    return hashlib.sha256(customer_id.encode()).hexdigest()
