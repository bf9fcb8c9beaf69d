"""Unit tests for the audit ledger's pure functions: the hash chain and body parsing."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from services.audit.ledger import GENESIS, Record, chain_hash, parse_object

RECORD = Record(topic="turn.received", partition=1, offset=42, body=b'{"event_id":"x"}')


def test_chain_hash_is_deterministic_sha256() -> None:
    first = chain_hash(GENESIS, RECORD)

    assert first == chain_hash(GENESIS, Record("turn.received", 1, 42, b'{"event_id":"x"}'))
    assert len(first) == hashlib.sha256().digest_size
    expected = hashlib.sha256(
        GENESIS + b'\x1fturn.received\x1f1\x1f42\x1f{"event_id":"x"}'
    ).digest()
    assert first == expected


@pytest.mark.parametrize(
    "changed",
    [
        replace(RECORD, topic="turn.analyzed"),
        replace(RECORD, partition=2),
        replace(RECORD, offset=43),
        replace(RECORD, body=b'{"event_id":"y"}'),
        replace(RECORD, body=b'{"event_id":"x"} '),
        replace(RECORD, body=b""),
    ],
    ids=["topic", "partition", "offset", "body", "body_whitespace", "body_empty"],
)
def test_chain_hash_changes_with_every_record_field(changed: Record) -> None:
    assert chain_hash(GENESIS, changed) != chain_hash(GENESIS, RECORD)


def test_chain_hash_changes_with_the_previous_hash() -> None:
    other_prev = chain_hash(GENESIS, RECORD)

    assert chain_hash(other_prev, RECORD) != chain_hash(GENESIS, RECORD)
    assert chain_hash(b"\x01", RECORD) != chain_hash(GENESIS, RECORD)


def test_position_fields_cannot_be_shifted_into_each_other() -> None:
    # partition 1 / offset 23 must not hash like partition 12 / offset 3.
    assert chain_hash(GENESIS, Record("t", 1, 23, b"b")) != chain_hash(
        GENESIS, Record("t", 12, 3, b"b")
    )
    assert chain_hash(GENESIS, Record("t", 1, 2, b"3")) != chain_hash(
        GENESIS, Record("t", 1, 23, b"")
    )


def test_a_chain_breaks_when_a_middle_record_changes() -> None:
    records = [Record("turn.received", 0, n, f'{{"n":{n}}}'.encode()) for n in range(5)]

    def heads(items: list[Record]) -> list[bytes]:
        prev, out = GENESIS, []
        for record in items:
            prev = chain_hash(prev, record)
            out.append(prev)
        return out

    original = heads(records)
    tampered = records.copy()
    tampered[2] = replace(records[2], body=b'{"n":99}')
    after = heads(tampered)

    assert original == heads(records)
    assert after[:2] == original[:2]
    assert all(a != b for a, b in zip(after[2:], original[2:], strict=True))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"event_id":"x","n":1}', {"event_id": "x", "n": 1}),
        (b"{}", {}),
        (b'  {"a": [1, 2]}\n', {"a": [1, 2]}),
        ('{"text":"caf\u00e9"}'.encode(), {"text": "caf\u00e9"}),
    ],
)
def test_parse_object_returns_json_objects(body: bytes, expected: dict[str, object]) -> None:
    assert parse_object(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2, 3]",
        b"[]",
        b'"a string"',
        b"42",
        b"null",
        b"true",
        b"{not json",
        b"",
        b"\xff\xfe\xfa\x00\x01",
        b"\x80\x81\x82",
        bytes(range(256)),
    ],
)
def test_parse_object_returns_none_for_anything_else(body: bytes) -> None:
    assert parse_object(body) is None


@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, b'{"a":' * 5000])
def test_parse_object_returns_none_for_deeply_nested_json(body: bytes) -> None:
    assert parse_object(body) is None


def test_parse_object_keeps_nul_escapes_as_bytes_only() -> None:
    # jsonb cannot store \u0000, so such a record must not be offered to it as JSON.
    assert parse_object(b'{"text": "a\\u0000b"}') is None
