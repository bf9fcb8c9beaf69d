"""Proactive follow-ups with a fake clock and two replicas on real PostgreSQL and the broker:
sent once, only with consent, never after the issue is resolved, never in quiet hours, and
WhatsApp's 24-hour window respected."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from cbd.procs import free_port
from services.audit.care_settings import CareSettings
from services.audit.followup import FollowUps
from services.audit.outcomes import Outcomes
from services.ingest.channels.identity import Conversations
from services.ingest.channels.outbound import MessagingOutbound
from services.ingest.channels.replies import ChannelReplies
from services.ingest.channels.voice import VoiceReplies
from services.ingest.settings import IngestSettings
from shared import db
from shared.events import Channel, Envelope, ReplyGeneratedEvent
from shared.settings import KafkaSettings, RedisSettings
from shared.topics import Topic
from tests.e2e.provider_standin import ProviderStandIn
from tests.integration.care_support import care_pool, read_topic, real_bus, routed

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 4, 10, 0, tzinfo=UTC)
SETTINGS = CareSettings(followup_after_hours=24, quiet_hours_start=21, quiet_hours_end=8)


@pytest.fixture
async def pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    pool = await care_pool(fresh_db)
    yield pool
    await pool.close()


@pytest.fixture
def provider() -> Iterator[ProviderStandIn]:
    """A stand-in of Twilio's REST API that checks what it receives."""
    standin = ProviderStandIn(
        base_url=f"http://127.0.0.1:{free_port()}",
        account_sid="AC" + "4" * 32,
        auth_token="standin-token",
        meta_token="meta-token",
        phone_number_id="1234",
    )
    standin.start()
    yield standin
    standin.stop()


async def customer_with_issue(
    pool: db.Pool,
    *,
    consent: bool,
    channel: Channel = Channel.SMS,
    name: str = "Sam",
    category: str = "delivery_lost",
    last_message_at: datetime = T0,
) -> tuple[str, uuid.UUID]:
    """A customer (memory's record), one open issue and their last conversation (care's)."""
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    conv = f"conv-{customer}"
    await pool.execute(
        "INSERT INTO memory.customers (customer_id, preferred_name, consent) VALUES ($1, $2, $3)",
        customer,
        name,
        {"follow_up": consent},
    )
    issue_id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO memory.issues (issue_id, customer_id, conversation_id, category, summary,
               opened_at, updated_at, source_turn_id, source_channel)
           VALUES ($1, $2, $3, $4, 'my parcel is lost', $5, $5, gen_random_uuid(), 'web')""",
        issue_id,
        customer,
        conv,
        category,
        last_message_at,
    )
    await Outcomes(pool, None, SETTINGS).on_turn_routed(
        routed(conv, customer, "my parcel is lost", last_message_at, channel=channel)
    )
    return customer, issue_id


async def test_one_follow_up_per_issue_from_two_replicas_and_never_after_resolution(
    pool: db.Pool, isolated_kafka: KafkaSettings
) -> None:
    yes, yes_issue = await customer_with_issue(pool, consent=True)
    no, _ = await customer_with_issue(pool, consent=False)
    _, resolved_issue = await customer_with_issue(pool, consent=True)
    async with real_bus(isolated_kafka) as bus:
        a = FollowUps(pool, bus, SETTINGS, replica="a")
        b = FollowUps(pool, bus, SETTINGS, replica="b")
        # Not old enough yet.
        assert await a.run(T0 + timedelta(hours=12)) == []
        # Resolved before the pass: never followed up.
        await pool.execute(
            "UPDATE memory.issues SET status = 'resolved', resolved_at = $2 WHERE issue_id = $1",
            resolved_issue,
            T0 + timedelta(hours=20),
        )
        due = T0 + timedelta(hours=25)
        first, second = await asyncio.gather(a.run(due), b.run(due))
        sent = first + second
        assert [(f.customer_id, f.outcome) for f in sent] == [(yes, "sent")]
        # Restarted replicas, later passes: still once.
        assert await FollowUps(pool, bus, SETTINGS, replica="c").run(due + timedelta(days=1)) == []
        records = await read_topic(isolated_kafka, Topic.REPLY_GENERATED, expect=1)
    assert len(records) == 1
    event = ReplyGeneratedEvent.model_validate(records[0])
    assert event.customer_id == yes
    assert event.channel is Channel.SMS
    assert event.conversation_id == f"conv-{yes}"
    assert event.payload.author.value == "system"
    assert event.payload.flags == ["follow_up"]
    assert event.payload.text.startswith("Hi Sam,")
    assert "missing delivery" in event.payload.text
    row = await pool.fetchrow("SELECT * FROM care.followups WHERE issue_id = $1", yes_issue)
    assert row is not None
    assert row["status"] == "sent"
    assert row["sent_at"] == due
    assert no not in {r["customer_id"] for r in await pool.fetch("SELECT * FROM care.followups")}


async def test_a_resolve_waits_for_a_follow_up_being_sent_so_none_comes_after_it(
    pool: db.Pool, isolated_kafka: KafkaSettings
) -> None:
    _, issue_id = await customer_with_issue(pool, consent=True)
    async with real_bus(isolated_kafka) as bus:
        publishing = asyncio.Event()
        release = asyncio.Event()
        real_publish = bus.publish

        async def slow_publish(event: Envelope, /, *, confirm: bool = True) -> None:
            publishing.set()
            await release.wait()
            await real_publish(event, confirm=confirm)

        bus.publish = slow_publish  # type: ignore[method-assign]
        run = asyncio.create_task(FollowUps(pool, bus, SETTINGS).run(T0 + timedelta(days=2)))
        await publishing.wait()
        resolve = asyncio.create_task(
            pool.execute(
                "UPDATE memory.issues SET status = 'resolved' WHERE issue_id = $1", issue_id
            )
        )
        await asyncio.sleep(0.3)
        assert not resolve.done()  # memory's resolve waits for the message to be out
        release.set()
        assert len(await run) == 1
        await resolve
        assert (
            await pool.fetchval("SELECT status FROM memory.issues WHERE issue_id = $1", issue_id)
            == "resolved"
        )


async def test_quiet_hours_and_the_whatsapp_window(
    pool: db.Pool, isolated_kafka: KafkaSettings
) -> None:
    _, wa_issue = await customer_with_issue(pool, consent=True, channel=Channel.WHATSAPP)
    _, voice_issue = await customer_with_issue(pool, consent=True, channel=Channel.VOICE)
    async with real_bus(isolated_kafka) as bus:
        night = datetime(2026, 11, 6, 23, 0, tzinfo=UTC)
        assert await FollowUps(pool, bus, SETTINGS).run(night) == []  # quiet hours: wait
        morning = datetime(2026, 11, 7, 9, 0, tzinfo=UTC)
        done = {f.issue_id: f.outcome for f in await FollowUps(pool, bus, SETTINGS).run(morning)}
        assert done == {wa_issue: "skipped_whatsapp_window", voice_issue: "skipped_voice"}
        # With an approved template it goes out as the template.
        _, later_issue = await customer_with_issue(
            pool, consent=True, channel=Channel.WHATSAPP, last_message_at=morning
        )
        templated = CareSettings(whatsapp_template="issue_follow_up")
        [f] = await FollowUps(pool, bus, templated).run(morning + timedelta(days=2))
        assert (f.issue_id, f.outcome) == (later_issue, "sent")
        [record] = await read_topic(isolated_kafka, Topic.REPLY_GENERATED, expect=1)
        assert record["payload"]["flags"] == ["follow_up", "whatsapp_template:issue_follow_up"]
        # The template's placeholders travel with it, for ingest's WhatsApp sender.
        variables = record["payload"]["template_variables"]
        assert set(variables) == {"1", "2"}
        assert variables["1"]
        assert variables["2"] in record["payload"]["text"]
    detail = json.dumps(
        [
            dict(r)
            for r in await pool.fetch(
                "SELECT issue_id::text, status, detail FROM care.followups ORDER BY detail"
            )
        ]
    )
    assert "skipped_whatsapp_window" in detail


async def test_a_whatsapp_follow_up_outside_the_window_reaches_the_provider_as_its_template(
    pool: db.Pool,
    isolated_kafka: KafkaSettings,
    redis_client: aioredis.Redis,
    provider: ProviderStandIn,
) -> None:
    """Audit's follow-up, read back from the broker, sent by ingest's WhatsApp sender to a
    stand-in of Twilio's API: a Content template with the issue in its variables."""
    customer, _ = await customer_with_issue(pool, consent=True, channel=Channel.WHATSAPP)
    content_sid = "HX" + "cd" * 16
    async with real_bus(isolated_kafka) as bus:
        templated = CareSettings(whatsapp_template="issue_follow_up")
        [f] = await FollowUps(pool, bus, templated).run(T0 + timedelta(days=2))
        [record] = await read_topic(isolated_kafka, Topic.REPLY_GENERATED, expect=1)
    assert f.outcome == "sent"
    event = ReplyGeneratedEvent.model_validate(record)

    settings = IngestSettings(
        redis=RedisSettings(key_prefix=f"it-{uuid.uuid4().hex[:8]}:"),
        twilio_account_sid=provider.account_sid,
        twilio_auth_token=provider.auth_token,
        twilio_api_base=provider.base_url,
        twilio_whatsapp_from="whatsapp:+15005550006",
        whatsapp_templates={"issue_follow_up": content_sid},
    )
    prefix = settings.redis.key_prefix
    conversations = Conversations(redis_client, prefix, settings.conversation_idle_s)
    number = "whatsapp:+447700900" + str(uuid.uuid4().int % 1000).zfill(3)
    # The conversation's reply address, as ingest keeps it from the customer's last message.
    await redis_client.set(
        f"{prefix}addr:{event.conversation_id}",
        json.dumps({"provider": "twilio", "channel": "whatsapp", "to": number}),
    )
    async with httpx.AsyncClient(timeout=10) as client:
        sender = ChannelReplies(
            conversations,
            MessagingOutbound(settings, redis_client, client),
            VoiceReplies(redis_client, prefix),
        )
        await sender.deliver(event)
        await sender.deliver(event)  # redelivered: sent once

    [sent] = provider.sent_to(number)
    assert provider.refused == []
    assert sent.template == content_sid
    assert sent.body == ""
    assert sent.variables == {"1": "Sam", "2": "your missing delivery"}
    assert event.customer_id == customer
