"""Erasure through the running memory service: its lifespan wires the outbox and the relay."""

from __future__ import annotations

import secrets

import httpx
import pytest
from pydantic import SecretStr

from services.memory.app import create_app
from services.memory.settings import MemorySettings
from shared.settings import KafkaSettings, PostgresSettings, RedisSettings
from shared.topics import Topic
from tests.kit import read_topic, serving

pytestmark = pytest.mark.integration


async def test_a_retried_erasure_answers_the_same_and_publishes_once(
    stack_env: dict[str, str], fresh_db: str, isolated_kafka: KafkaSettings
) -> None:
    settings = MemorySettings(
        kafka=isolated_kafka,
        postgres=PostgresSettings(dsn=SecretStr(fresh_db)),
        redis=RedisSettings(
            url=SecretStr(stack_env["CBD_REDIS_URL"]), key_prefix=f"it-{secrets.token_hex(4)}:"
        ),
        admin_token=SecretStr("erasure-admin"),
    )
    customer = f"sam-{secrets.token_hex(4)}"
    auth = {"authorization": "Bearer erasure-admin"}
    async with (
        serving(create_app(settings)) as (url,),
        httpx.AsyncClient(base_url=url, headers=auth, timeout=20) as http,
    ):
        linked = await http.post(
            f"/v1/customers/{customer}/identities", json={"identity": "email:sam@example.com"}
        )
        assert linked.status_code == 201, linked.text
        first = await http.delete(f"/v1/customers/{customer}")
        assert first.status_code == 200, first.text
        again = await http.delete(f"/v1/customers/{customer}")
        assert (again.status_code, again.json()) == (200, first.json())
        assert (await http.get(f"/v1/customers/{customer}")).status_code == 404
        ready = await http.get("/readyz")
        assert ready.json()["status"] == "ready", ready.text

    records = await read_topic(isolated_kafka, Topic.CUSTOMER_ERASED, expect=2, timeout_s=5)
    assert [r["event_id"] for r in records] == [first.json()["erasure_event_id"]]
    assert sorted(records[0]["payload"]["identities"]) == ["email:sam@example.com", customer]
