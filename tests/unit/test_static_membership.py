"""Static group membership (KIP-345): the replica's instance id reaches each consumer's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from cbd.runtime import Platform
from cbd.serve import SERVICES
from shared.events import TurnReceivedEvent
from shared.kafka import ConsumerSpec, EventBus, make_broker, subscribe
from shared.settings import KafkaSettings
from shared.topics import Topic

GROUP = "cbd-emotion.turn.received"


def consumer_args(settings: KafkaSettings) -> dict[str, Any]:
    """What FastStream hands aiokafka's consumer for the one subscription `subscribe` makes."""
    broker = make_broker(settings, client_id="cbd-emotion")

    async def handler(event: TurnReceivedEvent) -> None:
        del event

    subscribe(
        broker,
        EventBus(broker, settings, "emotion"),
        settings=settings,
        topic=Topic.TURN_RECEIVED,
        model=TurnReceivedEvent,
        handler=handler,
        spec=ConsumerSpec(service="emotion", group_id=GROUP),
    )
    (subscriber,) = broker.subscribers
    # FastStream starts each subscriber's consumer as builder(group_id=..., **connection args).
    return {"group_id": subscriber.group_id, **subscriber._connection_args}  # type: ignore[attr-defined]


async def test_an_instance_id_makes_each_consumer_a_static_member_of_its_group() -> None:
    args = consumer_args(KafkaSettings(instance_id="emotion-7c9d-x2"))
    assert args["group_id"] == GROUP
    assert args["group_instance_id"] == f"{GROUP}.emotion-7c9d-x2"
    # aiokafka takes it as it is (it sends it in JoinGroup and never sends LeaveGroup for it).
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", **args)
    assert consumer._group_instance_id == f"{GROUP}.emotion-7c9d-x2"


@pytest.mark.parametrize("unset", [None, ""])
async def test_without_an_instance_id_membership_stays_dynamic(unset: str | None) -> None:
    args = consumer_args(KafkaSettings(instance_id=unset))
    assert args.get("group_instance_id") is None
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", **args)
    assert consumer._group_instance_id is None


def test_the_instance_id_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBD_KAFKA_INSTANCE_ID", "memory-5f6b8d7c4-q2w9z")
    assert KafkaSettings().group_instance_id(GROUP) == f"{GROUP}.memory-5f6b8d7c4-q2w9z"
    monkeypatch.delenv("CBD_KAFKA_INSTANCE_ID")
    assert KafkaSettings().group_instance_id(GROUP) is None


@pytest.mark.parametrize("bad", ["pod/1", "two words", "é", "x" * 121])
def test_an_instance_id_kafka_would_refuse_is_refused_at_start_up(bad: str) -> None:
    with pytest.raises(ValidationError, match="instance_id"):
        KafkaSettings(instance_id=bad)


def test_the_supervisor_gives_each_service_process_its_own_stable_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even with an id in the supervisor's own environment, each process gets its own.
    monkeypatch.setenv("CBD_KAFKA_INSTANCE_ID", "shared-by-mistake")
    platform = Platform.for_tests(tmp_path)
    platform.static_membership = True
    ids = {name: process_env(platform, name)["CBD_KAFKA_INSTANCE_ID"] for name in SERVICES}
    assert len(set(ids.values())) == len(SERVICES)
    # The same replica restarted (a new process) keeps its id, so it rejoins as itself.
    assert {name: process_env(platform, name)["CBD_KAFKA_INSTANCE_ID"] for name in SERVICES} == ids
    for value in ids.values():
        assert KafkaSettings(instance_id=value).instance_id == value


def test_the_embedded_platform_keeps_dynamic_membership_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CBD_KAFKA_INSTANCE_ID", raising=False)
    platform = Platform.for_tests(tmp_path)
    assert "CBD_KAFKA_INSTANCE_ID" not in process_env(platform, "emotion")


def process_env(platform: Platform, name: str) -> dict[str, str]:
    env = platform._process(name).env
    assert env is not None
    return env
