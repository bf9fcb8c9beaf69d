"""Each service's Kafka user may do exactly what its code does: read what it subscribes to,
write what it publishes, commit offsets for its own consumer groups, nothing else.

What a service reads and writes is read from its code (services/<service>/), not listed here:
`subscribe(Topic.X, ...)` consumes X, a call whose name contains `publish` with `Topic.X` as
its first argument produces X, and a service that subscribes through shared/kafka.py may
dead-letter. Any other use of a topic in a service's code fails the test until it is
classified, so a new way of publishing cannot slip past the ACLs unseen.
"""

from __future__ import annotations

import ast
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faststream.security import SASLScram512
from pydantic import SecretStr, ValidationError

from cbd.deadletter import REPLAY_GROUP
from cbd.serve import SERVICES
from shared.kafka import broker_security, client_security, make_broker
from shared.settings import KafkaSettings
from shared.topics import ALL_TOPICS, Topic

ROOT = Path(__file__).resolve().parents[2]
Doc = dict[str, Any]


@dataclass
class Access:
    """What one service's code does with the topics."""

    consumes: set[str] = field(default_factory=set)
    produces: set[str] = field(default_factory=set)
    unclassified: list[str] = field(default_factory=list)


def _topic(node: ast.AST) -> str | None:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "Topic"
    ):
        return Topic[node.attr].value
    return None


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def code_access(service: str) -> Access:
    """Topics `service` consumes and produces, from its source."""
    access = Access()
    classified: set[int] = set()
    reads_all = False
    for path in sorted((ROOT / "services" / service).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "ALL_TOPICS":
                reads_all = True
            if not isinstance(node, ast.Call) or not node.args:
                continue
            topic = _topic(node.args[0])
            if topic is None:
                continue
            name = _callee(node)
            if name == "subscribe":
                access.consumes.add(topic)
            elif "publish" in name:
                access.produces.add(topic)
            else:
                continue
            classified.add(id(node.args[0]))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _topic(node) and id(node) not in classified:
                access.unclassified.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    if reads_all:
        # audit: one group over every topic; it stores what it reads and publishes nothing.
        access.consumes = {t.value for t in ALL_TOPICS}
        access.unclassified = []
    elif access.consumes:
        # shared/kafka.py's subscribe dead-letters what it cannot handle.
        access.produces.add(Topic.DEAD_LETTER.value)
    return access


def acl_access(user: Doc) -> tuple[Access, set[tuple[str, str]]]:
    """What a KafkaUser's ACLs allow on topics, and the groups it may use."""
    access = Access()
    groups = set()
    for acl in user["spec"]["authorization"]["acls"]:
        resource, ops = acl["resource"], set(acl["operations"])
        assert acl.get("type", "allow") == "allow"
        if resource["type"] == "topic":
            assert resource["patternType"] == "literal", "topic ACLs name one topic each"
            if "Read" in ops:
                access.consumes.add(resource["name"])
            if "Write" in ops:
                access.produces.add(resource["name"])
            assert ops <= {"Read", "Write", "Describe"}, resource
        elif resource["type"] == "group":
            assert ops <= {"Read", "Describe"}, resource
            groups.add((resource["name"], resource["patternType"]))
        else:
            raise AssertionError(f"unexpected ACL resource {resource}")
    return access, groups


def test_the_code_scan_sees_every_service() -> None:
    ingest = code_access("ingest")
    assert {"turn.received", "feedback.received"} <= ingest.produces
    assert "reply.generated" in ingest.consumes
    assert code_access("audit").produces == set()


def test_each_service_user_has_exactly_its_topics(rendered: dict[str, list[Doc]]) -> None:
    users = {
        d["metadata"]["name"]: d for d in rendered["overlays/prod"] if d["kind"] == "KafkaUser"
    }
    assert set(users) == {f"cbd-{s}" for s in SERVICES} | {"cbd-ops"}
    for service in SERVICES:
        code = code_access(service)
        assert code.unclassified == [], f"{service}: topic uses neither read nor written"
        acls, groups = acl_access(users[f"cbd-{service}"])
        assert acls.consumes == code.consumes, f"{service} reads"
        assert acls.produces == code.produces, f"{service} writes"
        # The groups shared/service.py names (`cbd-<service>.<topic>`), or audit's one group.
        want = {("cbd-audit", "literal")} if service == "audit" else {(f"cbd-{service}.", "prefix")}
        assert groups == want, service
        assert users[f"cbd-{service}"]["spec"]["authentication"]["type"] == "scram-sha-512"


def test_the_operators_user_can_replay_dead_letters_and_nothing_more(
    rendered: dict[str, list[Doc]],
) -> None:
    user = next(
        d
        for d in rendered["overlays/prod"]
        if d["kind"] == "KafkaUser" and d["metadata"]["name"] == "cbd-ops"
    )
    access, groups = acl_access(user)
    assert access.consumes == {Topic.DEAD_LETTER.value}
    # A letter goes back to the topic it came from: any platform topic but the letters' own.
    assert access.produces == {t.value for t in ALL_TOPICS} - {Topic.DEAD_LETTER.value}
    assert groups == {(REPLAY_GROUP, "literal")}


def test_only_memory_may_announce_an_erasure(rendered: dict[str, list[Doc]]) -> None:
    writers = {
        d["metadata"]["name"]
        for d in rendered["overlays/prod"]
        if d["kind"] == "KafkaUser" and "customer.erased" in acl_access(d)[0].produces
    }
    # The operators' replay user may put back a dead-lettered erasure, nothing new.
    assert writers == {"cbd-memory", "cbd-ops"}


def test_the_services_speak_tls_and_scram_when_the_manifests_say_so() -> None:
    # What cbd-config and each service's ConfigMap set (tests/deploy/test_production_settings
    # loads them); here, that the clients are built with it rather than ignoring it.
    settings = KafkaSettings(
        bootstrap_servers="cbd-kafka-kafka-bootstrap.care-by-design.svc:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="cbd-emotion",
        sasl_password=SecretStr("s" * 64),
    )
    kwargs = client_security(settings)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "cbd-emotion"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    security = broker_security(settings)
    assert isinstance(security, SASLScram512)
    assert security.use_ssl is True
    assert isinstance(
        make_broker(settings, client_id="cbd-emotion").specification.security, SASLScram512
    )
    # Plaintext stays the embedded default; SASL without a password is refused up front.
    assert client_security(KafkaSettings()) == {}
    assert broker_security(KafkaSettings()) is None
    with pytest.raises(ValidationError):
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="cbd-emotion")
