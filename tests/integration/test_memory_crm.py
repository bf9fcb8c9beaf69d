"""CRM sync into memory's profile: the stand-in CRM over real HTTP, the profile in PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
import redis.asyncio as aioredis

from cbd.procs import free_port
from services.memory.context import ContextAssembler, ContextLimits
from services.memory.crm import CrmSync
from services.memory.customers import CustomerStore
from shared import db
from shared.connectors import DEMO_CONNECTORS, ActionResult, ConnectorClient, load_connectors
from shared.embedding import MiniLmEmbedder
from shared.events import CustomerProfile, utcnow

pytestmark = pytest.mark.integration

HOUR = 3600.0


class Counting:
    """The real connector, counting the lookups it makes."""

    def __init__(self, client: ConnectorClient) -> None:
        self.client = client
        self.calls = 0

    async def run(self, action: str, entities: dict[str, str]) -> ActionResult:
        self.calls += 1
        return await self.client.run(action, entities)


@pytest.fixture
def store(memory_pool: db.Pool, redis_client: aioredis.Redis) -> CustomerStore:
    return CustomerStore(
        memory_pool, redis_client, MiniLmEmbedder(), key_prefix=f"it-{uuid.uuid4().hex[:6]}:"
    )


async def profile_of(store: CustomerStore, customer: str, tenant: str) -> CustomerProfile:
    assembler = ContextAssembler(store.pg, ContextLimits())
    rows = await assembler.fetch(
        customer, f"conv-{uuid.uuid4().hex[:8]}", np.zeros(384, dtype=np.float32), tenant=tenant
    )
    profile = assembler.build(rows, recent=[], source="empty", now=utcnow()).profile
    assert profile is not None
    return profile


async def test_a_customers_crm_facts_reach_the_turns_context_once_per_interval(
    store: CustomerStore, crm_url: str
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    async with ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=crm_url) as client:
        connector = Counting(client)
        crm = CrmSync(connector, store, action="account_lookup", interval_s=HOUR, wait_s=2.0)
        await crm.before_turn("cust-1", tenant=tenant)
        profile = await profile_of(store, "cust-1", tenant)
        assert profile.tier == "gold"
        assert profile.lifetime_value == pytest.approx(1840.5)
        summary = profile.purchase_summary or ""
        assert "gold tier" in summary
        assert "orders" in summary
        # Within the interval the CRM is not asked again, by this replica or any other.
        await crm.before_turn("cust-1", tenant=tenant)
        other_replica = CrmSync(
            connector, store, action="account_lookup", interval_s=HOUR, wait_s=2.0
        )
        await other_replica.before_turn("cust-1", tenant=tenant)
        assert connector.calls == 1
        # Once it is due again, it is asked again.
        await store.pg.execute(
            "UPDATE memory.customers SET crm_synced_at = now() - interval '2 hours' "
            "WHERE tenant = $1 AND customer_id = 'cust-1'",
            tenant,
        )
        await crm.before_turn("cust-1", tenant=tenant)
        assert connector.calls == 2


async def test_a_customer_the_crm_does_not_know_is_not_asked_about_every_turn(
    store: CustomerStore, crm_url: str
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    await store.update_profile("web-visitor", {"tier": "silver"}, tenant=tenant)
    async with ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=crm_url) as client:
        connector = Counting(client)
        crm = CrmSync(connector, store, action="account_lookup", interval_s=HOUR, wait_s=2.0)
        await crm.before_turn("web-visitor", tenant=tenant)
        await crm.before_turn("web-visitor", tenant=tenant)
    assert connector.calls == 1
    profile = await profile_of(store, "web-visitor", tenant)
    # What the platform knew stays.
    assert profile.tier == "silver"
    assert profile.purchase_summary is None


async def test_a_crm_outage_changes_nothing_and_the_next_turn_asks_again(
    store: CustomerStore,
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    await store.update_profile("cust-1", {"tier": "gold", "lifetime_value": 10.0}, tenant=tenant)
    down = f"http://127.0.0.1:{free_port()}"
    async with ConnectorClient(load_connectors(DEMO_CONNECTORS), base_url=down) as client:
        connector = Counting(client)
        crm = CrmSync(connector, store, action="account_lookup", interval_s=HOUR, wait_s=2.0)
        await crm.before_turn("cust-1", tenant=tenant)
        await crm.before_turn("cust-1", tenant=tenant)
    assert connector.calls == 2
    profile = await profile_of(store, "cust-1", tenant)
    assert profile.tier == "gold"
    assert profile.lifetime_value == pytest.approx(10.0)


class Slow:
    """A CRM that takes its time."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def run(self, action: str, entities: dict[str, str]) -> ActionResult:
        await asyncio.sleep(self.delay_s)
        return ActionResult(
            action=action, ok=True, facts={"tier": "platinum"}, summary="Account: platinum"
        )


async def test_a_slow_crm_holds_a_turn_up_only_briefly_and_the_next_turn_has_its_facts(
    store: CustomerStore,
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    await store.update_profile("slow-1", {}, tenant=tenant)
    crm = CrmSync(Slow(1.0), store, action="account_lookup", interval_s=HOUR, wait_s=0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await crm.before_turn("slow-1", tenant=tenant)
    assert loop.time() - started < 0.9, "the turn waited for the whole lookup"
    assert (await profile_of(store, "slow-1", tenant)).tier is None
    await crm.drain()
    assert (await profile_of(store, "slow-1", tenant)).tier == "platinum"
