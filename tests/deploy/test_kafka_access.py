"""Each service's Kafka user may do exactly what its code does: read what it subscribes to,
write what it publishes, commit offsets for its own consumer groups, nothing else.

What a service reads and writes is read from its code (services/<service>/), not listed here:
`subscribe(Topic.X, ...)` consumes X, a call whose name contains `publish` with `Topic.X` as
its first argument produces X, and a service that subscribes through shared/kafka.py may
dead-letter. `bus.publish(event)` produces the topic of the event's type (`Topic.for_event`):
the type is read from how `event` is built (`XEvent(...)`, `XEvent.create(...)`,
`e.derive(XEvent, ...)`, a function returning `XEvent`, a parameter annotated `XEvent`), and
a function that hands its `Envelope` parameter on to a bus is a publisher itself, classified at
its callers; `publishing(bus, XEvent, ...)` (shared/outbox.py) produces each model's topic.
Any other use of a topic, and any bus publish whose event type cannot be read, fails the test
until it is classified, so a new way of publishing cannot slip past the ACLs unseen.
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
from shared import events
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


def _event_topics() -> dict[str, str]:
    """Event class name -> the topic `Topic.for_event` gives its events."""
    out = {}
    for name, cls in vars(events).items():
        if isinstance(cls, type) and issubclass(cls, events.Envelope):
            try:
                out[name] = Topic(cls.type_name()).value
            except (TypeError, ValueError):
                continue  # the generic envelope: no fixed type
    return out


EVENT_TOPICS = _event_topics()


def _on_a_bus(call: ast.Call) -> bool:
    """`bus.publish(...)`, `self.bus.publish(...)`, `infra.bus.publish(...)` and the like."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr != "publish":
        return False
    owner = func.value
    name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
    return name.lstrip("_") == "bus"


def _annotation_name(node: ast.expr | None) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return ""


class _Scope:
    """Resolves the event class of an expression inside one function of one module."""

    def __init__(self, tree: ast.Module, function: ast.AST | None) -> None:
        self.returns = {
            f.name: _annotation_name(f.returns)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        self.function = function

    def event_class(self, node: ast.expr, depth: int = 0) -> str | None:
        """The event class `node` evaluates to, or None when the code does not say."""
        if depth > 5:
            return None
        if isinstance(node, ast.Call):
            return self._built(node)
        if isinstance(node, ast.Name) and self.function is not None:
            return self._bound(node.id, depth)
        return None

    def _known(self, name: str) -> str | None:
        return name if name in EVENT_TOPICS else None

    def _built(self, call: ast.Call) -> str | None:
        """XEvent(...), XEvent.create(...), e.derive(XEvent, ...), f(...) -> XEvent."""
        func = call.func
        if isinstance(func, ast.Name):
            return self._known(func.id) or self._known(self.returns.get(func.id, ""))
        if not isinstance(func, ast.Attribute):
            return None
        if func.attr == "derive":
            first = call.args[0] if call.args else None
            return self._known(first.id) if isinstance(first, ast.Name) else None
        if isinstance(func.value, ast.Name) and func.value.id in EVENT_TOPICS:
            return func.value.id
        return self._known(self.returns.get(func.attr, ""))

    def _bound(self, name: str, depth: int) -> str | None:
        """The class of a local name: its parameter annotation or every assignment to it."""
        assert self.function is not None
        found = None
        for sub in ast.walk(self.function):
            if isinstance(sub, ast.arg) and sub.arg == name:
                found = self._known(_annotation_name(sub.annotation))
            elif isinstance(sub, ast.Assign | ast.AnnAssign):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                hit = any(isinstance(t, ast.Name) and t.id == name for t in targets)
                if hit and sub.value is not None:
                    found = self.event_class(sub.value, depth + 1)
                    if found is None:
                        return None  # one assignment the scan cannot read: unknown
        return found


def _functions(tree: ast.Module) -> dict[int, ast.AST]:
    """id(call node) -> the innermost function that contains it."""
    where: dict[int, ast.AST] = {}
    for f in ast.walk(tree):
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(f):
                where[id(sub)] = f  # inner functions are walked later and win
    return where


def _generic_parameters(function: ast.AST) -> set[str]:
    if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
        return set()
    return {a.arg for a in function.args.args if _annotation_name(a.annotation) == "Envelope"}


def _forwards(call: ast.Call, function: ast.AST | None) -> bool:
    """Whether `call` is a bus publish of the enclosing function's generic `Envelope`."""
    first = call.args[0]
    return (
        function is not None
        and _on_a_bus(call)
        and isinstance(first, ast.Name)
        and first.id in _generic_parameters(function)
    )


def _forwarders(tree: ast.Module) -> set[str]:
    """Functions of a module that hand a generic `Envelope` parameter to a bus publish."""
    out = set()
    for f in ast.walk(tree):
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            isinstance(sub, ast.Call) and sub.args and _forwards(sub, f) for sub in ast.walk(f)
        ):
            out.add(f.name)
    return out


def _published(call: ast.Call, tree: ast.Module, function: ast.AST | None) -> list[str] | None:
    """The topics an event-publishing call produces; None when the scan cannot tell."""
    if _callee(call) == "publishing":
        # shared/outbox.py: publishing(bus, XEvent, ...) delivers those events.
        models = [m.id if isinstance(m, ast.Name) else "" for m in call.args[1:]]
        if not models or any(m not in EVENT_TOPICS for m in models):
            return None
        return [EVENT_TOPICS[m] for m in models]
    if _forwards(call, function):
        return []  # the forwarder's callers are classified instead
    event = _Scope(tree, function).event_class(call.args[0])
    return None if event is None else [EVENT_TOPICS[event]]


def _scan(path: Path, access: Access, mentions: list[str]) -> bool:
    """Add one module's topic uses to `access`; True when it reads every topic."""
    tree = ast.parse(path.read_text(), str(path))
    where = _functions(tree)
    forwarders = _forwarders(tree)
    here = f"{path.relative_to(ROOT)}"
    classified: set[int] = set()
    reads_all = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "ALL_TOPICS":
            reads_all = True
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = _callee(node)
        topic = _topic(node.args[0])
        if topic is None:
            if _on_a_bus(node) or name in forwarders or name == "publishing":
                topics = _published(node, tree, where.get(id(node)))
                if topics is None:
                    access.unclassified.append(f"{here}:{node.lineno}")
                else:
                    access.produces.update(topics)
            continue
        if name == "subscribe":
            access.consumes.add(topic)
        elif "publish" in name:
            access.produces.add(topic)
        else:
            continue
        classified.add(id(node.args[0]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _topic(node) and id(node) not in classified:
            mentions.append(f"{here}:{node.lineno}")
    return reads_all


def code_access(service: str) -> Access:
    """Topics `service` consumes and produces, from its source."""
    access = Access()
    mentions: list[str] = []
    reads_all = False
    for path in sorted((ROOT / "services" / service).rglob("*.py")):
        reads_all = _scan(path, access, mentions) or reads_all
    if reads_all:
        # audit: one group over every topic, so naming a topic is reading it; what the care
        # loop publishes is still classified above (an unreadable publish stays unclassified).
        access.consumes = {t.value for t in ALL_TOPICS}
    else:
        access.unclassified.extend(mentions)
        if access.consumes:
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
    # The care loop: closes idle conversations, records reviews, sends follow-ups.
    assert code_access("audit").produces == {
        "conversation.closed",
        "review.submitted",
        "reply.generated",
    }
    assert "conversation.closed" in code_access("escalation").produces


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
        # The groups shared/service.py names (`cbd-<service>.<topic>`), and audit's one group
        # over every topic.
        want = {(f"cbd-{service}.", "prefix")}
        if service == "audit":
            want.add(("cbd-audit", "literal"))
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
