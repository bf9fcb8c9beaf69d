"""What an erasure receipt check reads from a record: who it is about and when it began."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from shared.erasure import Subject, conversation_key, customer_key, origin_of
from tests.kit import reply_generated, turn_received

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_turn_began_when_it_reached_the_edge_and_its_reply_with_it() -> None:
    turn = turn_received(customer_id="sam")
    turn = turn.model_copy(
        update={
            "payload": turn.payload.model_copy(
                update={"message": turn.payload.message.model_copy(update={"received_at": T0})}
            ),
            "occurred_at": T0 + timedelta(seconds=1),
        }
    )
    assert Subject.of(turn).origin == T0
    assert origin_of(json.loads(turn.model_dump_json())) == T0
    reply = reply_generated(turn)
    assert Subject.of(reply).origin == reply.occurred_at  # no turn time carried: its own
    timed = reply.model_copy(
        update={"payload": reply.payload.model_copy(update={"turn_received_at": T0})}
    )
    assert Subject.of(timed).origin == T0
    assert Subject.of(timed, "phone:447700900123").customers == ("sam", "phone:447700900123")


def test_a_raw_record_names_its_customer_conversation_and_tenant_whatever_its_shape() -> None:
    erased = {
        "event_type": "customer.erased",
        "conversation_id": "erasure-1",
        "customer_id": "sam",
        "tenant": "acme",
        "occurred_at": T0.isoformat(),
        "payload": {"erased_customer_id": "sam-2"},
    }
    subject = Subject.of_record(erased)
    assert subject.customers == ("sam", "sam-2")
    assert subject.conversations == ("erasure-1",)
    assert (subject.tenant, subject.origin) == ("acme", T0)
    dead = Subject.of_record({"dead_letter_id": str(uuid.uuid4()), "key": "conv-9"})
    assert dead.conversations == ("conv-9",)
    assert (dead.tenant, dead.origin) == ("default", None)  # unknown: counts as before
    assert origin_of({"occurred_at": "not a time"}) is None
    assert origin_of({"occurred_at": "2026-11-30T12:00:00"}) is None  # naive: unknown


def test_receipt_keys_name_nobody_and_keep_tenants_apart() -> None:
    assert customer_key("acme", "user-1") != customer_key("globex", "user-1")
    assert customer_key("acme", "x") != conversation_key("x")
    assert b"user-1" not in customer_key("acme", "user-1")
    assert len(conversation_key("conv-1")) == 32
