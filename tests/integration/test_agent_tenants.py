"""Agents act only within their own tenant, on real PostgreSQL and Redis (issue #12).

Two tenants each have a customer "user-1" waiting for a person. Agent Anna works for acme,
Gil for globex. Through the agent API and the console feed, Anna sees and touches acme's
ticket only: globex's ticket id gets the same 404 as an id that never existed, and none of
globex's frames reach her console.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.audit.care_settings import CareSettings
from services.escalation.api import REFUSALS, agent_router
from services.escalation.auth import AgentAuth
from services.escalation.desk import AgentSkills, Desk
from services.escalation.handlers import EscalationHandlers
from services.escalation.live import CONSOLE_CHANNEL, AgentHub, ConsoleFeed
from services.escalation.policy import PolicyStore
from services.escalation.settings import EscalationSettings
from shared.events import AgentAssist, AssistSuggestedEvent, Channel, RouteTarget
from shared.fanout import Fanout
from shared.http import install, provide
from shared.kafka import EventBus
from tests.integration.test_desk import decision, turn_event
from tests.kit import RecordingBus

pytestmark = pytest.mark.integration

SECRET = secrets.token_urlsafe(32)
CUSTOMER = "user-1"


class Console:
    """Stands in for a console's WebSocket: keeps the frames the hub sends it."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.heard = asyncio.Event()

    async def send_json(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        if frame["type"] == "assist":
            self.heard.set()


async def open_ticket(desk: Desk, tenant: str) -> uuid.UUID:
    event = turn_event(f"{tenant}-{uuid.uuid4().hex[:8]}", "let me talk to a person")
    event = event.model_copy(update={"customer_id": CUSTOMER, "tenant": tenant})
    decided = await desk.route(event, lambda _: decision(RouteTarget.HUMAN))
    assert decided.handoff is not None
    return decided.handoff.ticket_id


def auth() -> AgentAuth:
    return AgentAuth(
        {"anna": "pw-anna", "gil": "pw-gil", "ada": "pw-ada"},
        SECRET,
        tenants={"anna": "acme", "ada": ["acme", "initech"], "gil": "globex"},
    )


async def test_an_agent_never_sees_or_touches_another_tenants_ticket(
    desk: Desk,
) -> None:
    acme_ticket = await open_ticket(desk, "acme")
    globex_ticket = await open_ticket(desk, "globex")
    agents = auth()
    bus = RecordingBus()
    hub = AgentHub()
    fanout = Fanout(desk.redis, desk.prefix, channel=CONSOLE_CHANNEL, receiver=hub)
    app = FastAPI()
    install(app, max_body_bytes=64 * 1024, refusals=REFUSALS)
    app.include_router(agent_router())
    for value in (agents, desk, AgentSkills({}), ConsoleFeed(fanout)):
        provide(app, value)
    provide(app, bus, as_=EventBus)
    anna_console, gil_console = Console(), Console()
    hub.add(anna_console, agents.tenants_of("anna"))  # type: ignore[arg-type]
    hub.add(gil_console, agents.tenants_of("gil"))  # type: ignore[arg-type]
    anna = {"Authorization": f"Bearer {agents.issue('anna')}"}
    gil = {"Authorization": f"Bearer {agents.issue('gil')}"}
    base = "/v1/agent/tickets"
    async with (
        fanout.listening(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as http,
    ):
        queue = (await http.get("/v1/agent/queue", headers=anna)).json()["tickets"]
        assert [t["ticket_id"] for t in queue] == [str(acme_ticket)]
        assert [t["tenant"] for t in queue] == ["acme"]
        mine = (await http.get("/v1/agent/queue?mine=true", headers=anna)).json()["tickets"]
        assert [t["ticket_id"] for t in mine] == [str(acme_ticket)]

        # Globex's ticket reads exactly as a ticket that does not exist, for every move.
        unknown = uuid.uuid4()
        moves: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", "", None),
            ("POST", "/claim", None),
            ("POST", "/reply", {"text": "hello from acme"}),
            ("POST", "/resolve", None),
            ("POST", "/handback", None),
        ]
        for method, path, body in moves:
            foreign = await http.request(
                method, f"{base}/{globex_ticket}{path}", json=body, headers=anna
            )
            missing = await http.request(method, f"{base}/{unknown}{path}", json=body, headers=anna)
            assert foreign.status_code == missing.status_code == 404, path
            assert foreign.json() == missing.json(), path
        assert bus.published == []

        # Gil's own ticket is untouched, and he cannot be handed acme's customer.
        assert (await http.post(f"{base}/{globex_ticket}/claim", headers=gil)).status_code == 200
        assert (await desk.get(globex_ticket, tenants=["globex"])).claimed_by == "gil"
        assert (await http.post(f"{base}/{acme_ticket}/claim", headers=anna)).status_code == 200
        to_gil = await http.post(
            f"{base}/{acme_ticket}/transfer", json={"to_agent": "gil"}, headers=anna
        )
        to_nobody = await http.post(
            f"{base}/{acme_ticket}/transfer", json={"to_agent": "nobody"}, headers=anna
        )
        assert to_gil.status_code == to_nobody.status_code == 400
        to_ada = await http.post(
            f"{base}/{acme_ticket}/transfer", json={"to_agent": "ada"}, headers=anna
        )
        assert to_ada.status_code == 200
        assert to_ada.json()["claimed_by"] == "ada"
        # Each claim told only its own customer, in its own tenant.
        assert sorted((e.tenant, e.customer_id) for _, e, _ in bus.published) == [
            ("acme", CUSTOMER),
            ("globex", CUSTOMER),
        ]

        # The console feed: Anna's console hears acme's frames, never globex's.
        handlers = EscalationHandlers(bus, PolicyStore(), desk, ConsoleFeed(fanout))  # type: ignore[arg-type]
        for tenant in ("globex", "acme"):
            await handlers.on_assist_suggested(
                AssistSuggestedEvent.create(
                    conversation_id=f"{tenant}-conv",
                    customer_id=CUSTOMER,
                    channel=Channel.WEB,
                    tenant=tenant,
                    payload=AgentAssist(
                        turn_id=uuid.uuid4(), suggestions=[f"{tenant} draft"], tips=[]
                    ),
                )
            )
        # Frames arrive in publishing order: once acme's is here, globex's has been heard.
        async with asyncio.timeout(10):
            await anna_console.heard.wait()
            await gil_console.heard.wait()
        # Anna: her claim and transfer, then acme's drafts; Gil: his claim, globex's drafts.
        assert [f.get("suggestions", f["type"]) for f in anna_console.frames] == [
            "queue_changed",
            "queue_changed",
            ["acme draft"],
        ]
        assert [f.get("suggestions", f["type"]) for f in gil_console.frames] == [
            "queue_changed",
            ["globex draft"],
        ]


def test_an_agent_without_a_tenant_works_for_the_default_tenant() -> None:
    agents = AgentAuth({"agent": "agent"}, SECRET)
    verified = agents.verify(agents.issue("agent"))
    assert verified is not None
    assert verified.tenants == ("default",)
    # Naming a tenant changes the fingerprint (old tokens are revoked); no tenant keeps it.
    moved = AgentAuth({"agent": "agent"}, SECRET, tenants={"agent": "acme"})
    assert moved.fingerprint("agent") != agents.fingerprint("agent")
    assert AgentAuth({"agent": "agent"}, SECRET).fingerprint("agent") == agents.fingerprint("agent")


def test_the_development_agent_serves_the_development_tenants() -> None:
    # The chat page carries ingest's development widget key (tenant `demo`); keyless requests
    # are `default`'s: the dev `agent` answers both, as before tenants.
    assert EscalationSettings().tenants_by_agent() == {"agent": ["default", "demo"]}
    named = EscalationSettings(agents={"alice": "pw", "bob": "pw"}, agent_tenants={"bob": "acme"})
    assert named.tenants_by_agent() == {"bob": ["acme"]}
    with pytest.raises(ValueError, match="unknown agents"):
        EscalationSettings(agents={"alice": "pw"}, agent_tenants={"alicia": "acme"})
    assert CareSettings().tenants_by_reviewer() == {"reviewer": ["default", "demo"]}


async def test_the_development_agent_sees_the_chat_pages_and_keyless_tickets(
    desk: Desk,
) -> None:
    settings = EscalationSettings()
    agents = AgentAuth(
        {k: v.get_secret_value() for k, v in settings.agents.items()},
        SECRET,
        tenants=settings.tenants_by_agent(),
    )
    verified = agents.verify(agents.issue("agent"))
    assert verified is not None
    demo, keyless = await open_ticket(desk, "demo"), await open_ticket(desk, "default")
    await open_ticket(desk, "acme")
    queue = await desk.queue(tenants=verified.tenants)
    assert {t.ticket_id for t in queue} == {demo, keyless}
