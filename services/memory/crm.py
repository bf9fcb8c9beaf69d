"""CRM sync: a customer's tier, lifetime value and purchase history from the tenant's CRM.

The tenant's systems are described once (`shared/connectors.py`); the action named by
`CBD_MEMORY_CRM_ACTION` (`account_lookup` in the demo) answers with the customer's facts. Memory
asks it when a customer writes and their CRM facts are older than the sync interval, keeps the
answer in the profile (so routing sees the tier, prompts the history), and records when it
asked, so replicas and later turns do not ask again until it is due.

A turn waits for a due sync only briefly (`crm_wait_s`): a slow CRM finishes in the background
and the next turn has the facts. A CRM that fails or does not know the customer changes
nothing; the facts already kept stay.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from prometheus_client import Counter, Histogram

from shared.connectors import ActionResult

log = logging.getLogger(__name__)

CRM_SYNCS = Counter(
    "cbd_memory_crm_syncs_total",
    "CRM lookups for customers' profiles, by outcome (synced, unknown, failed)",
    ["outcome"],
)
CRM_SECONDS = Histogram(
    "cbd_memory_crm_sync_seconds",
    "Time a CRM lookup took",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class Connector(Protocol):
    """What CRM sync needs of `shared.connectors.ConnectorClient`."""

    async def run(self, action: str, entities: dict[str, str]) -> ActionResult:
        """Run one action on the tenant's systems; never raises for their faults."""
        ...


class ProfileStore(Protocol):
    """What CRM sync needs of `CustomerStore`."""

    async def crm_due(self, customer_id: str, interval_s: float, *, tenant: str) -> bool:
        """True when the CRM was not asked about the customer within `interval_s`."""
        ...

    async def record_crm(
        self,
        customer_id: str,
        *,
        tier: str | None,
        lifetime_value: float | None,
        purchase_summary: str | None,
        tenant: str,
    ) -> None:
        """Keep the CRM's facts in the profile."""
        ...

    async def crm_asked(self, customer_id: str, *, tenant: str) -> None:
        """Note that the CRM was asked and knew nothing."""
        ...


def _money(value: str | None) -> float | None:
    try:
        amount = float(value) if value is not None else None
    except ValueError:
        return None
    return amount if amount is not None and amount >= 0 else None


class CrmSync:
    """Brings CRM facts into customers' profiles, at most once per interval per customer."""

    def __init__(
        self,
        connector: Connector,
        store: ProfileStore,
        *,
        action: str,
        interval_s: float,
        wait_s: float,
    ) -> None:
        self.connector = connector
        self.store = store
        self.action = action
        self.interval_s = interval_s
        self.wait_s = wait_s
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def before_turn(self, customer_id: str, *, tenant: str) -> None:
        """Sync the customer if due, waiting at most `wait_s` (the rest runs on its own)."""
        key = (tenant, customer_id)
        task = self._running.get(key)
        if task is None:
            if not await self.store.crm_due(customer_id, self.interval_s, tenant=tenant):
                return
            task = asyncio.create_task(self.sync(customer_id, tenant=tenant), name="crm-sync")
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        await asyncio.wait({task}, timeout=self.wait_s)

    async def sync(self, customer_id: str, *, tenant: str) -> None:
        """Ask the CRM about the customer now and keep what it says. Never raises."""
        try:
            result = await self.connector.run(self.action, {"customer_id": customer_id})
            CRM_SECONDS.observe(result.latency_ms / 1000)
            if not result.ok:
                if result.error == "not found":
                    # The CRM does not know them (a new or anonymous customer): not asked
                    # again until the interval has passed.
                    CRM_SYNCS.labels("unknown").inc()
                    await self.store.crm_asked(customer_id, tenant=tenant)
                else:
                    # A fault in the CRM: asked again on the customer's next turn.
                    CRM_SYNCS.labels("failed").inc()
                    log.warning("CRM lookup failed: %s", result.error)
                return
            facts = result.facts
            await self.store.record_crm(
                customer_id,
                tier=facts.get("tier") or None,
                lifetime_value=_money(facts.get("lifetime_value")),
                purchase_summary=result.summary or None,
                tenant=tenant,
            )
            CRM_SYNCS.labels("synced").inc()
        except Exception:
            CRM_SYNCS.labels("failed").inc()
            log.warning("CRM sync failed", exc_info=True)

    async def drain(self) -> None:
        """Wait for syncs still running (at shutdown)."""
        if self._running:
            await asyncio.wait(set(self._running.values()), timeout=5.0)
