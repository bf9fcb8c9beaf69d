"""Escalation service: routing, the agent queue and console, /metrics, /livez, /readyz."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from starlette.applications import Starlette

from services.escalation.api import AgentAPI
from services.escalation.auth import AgentAuth, LoginThrottle
from services.escalation.desk import Desk
from services.escalation.handlers import EscalationHandlers
from services.escalation.live import AgentHub
from services.escalation.policy import PolicyStore
from services.escalation.settings import EscalationSettings
from shared.events import (
    AssistSuggestedEvent,
    CustomerErasedEvent,
    ReplyGeneratedEvent,
    TurnContextualizedEvent,
)
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = EscalationSettings


def create_app(settings: EscalationSettings | None = None) -> Starlette:
    """Build the escalation service."""
    cfg = settings or EscalationSettings()
    hub = AgentHub()
    auth = AgentAuth(
        {k: v.get_secret_value() for k, v in cfg.agents.items()},
        cfg.agent_token_secret.get_secret_value(),
        cfg.agent_token_ttl_s,
    )
    api = AgentAPI(auth, hub)

    async def wire(infra: Infra, _: AsyncExitStack) -> None:
        policies = PolicyStore(cfg.policy_path, cfg.policy_check_interval_s)
        desk = Desk(
            infra.require_pg(),
            infra.require_redis(),
            key_prefix=cfg.redis.key_prefix,
            handle_minutes=cfg.handle_minutes,
            agents_on_shift=cfg.agents_on_shift,
        )
        handlers = EscalationHandlers(infra.bus, policies, desk, hub)
        infra.subscribe(
            Topic.TURN_CONTEXTUALIZED, TurnContextualizedEvent, handlers.on_turn_contextualized
        )
        infra.subscribe(Topic.REPLY_GENERATED, ReplyGeneratedEvent, handlers.on_reply_generated)
        infra.subscribe(Topic.ASSIST_SUGGESTED, AssistSuggestedEvent, handlers.on_assist_suggested)
        infra.subscribe(Topic.CUSTOMER_ERASED, CustomerErasedEvent, handlers.on_customer_erased)
        api.desk = desk
        api.bus = infra.bus
        await auth.sync_versions(infra.require_pg())
        api.throttle = LoginThrottle(infra.require_redis(), cfg.redis.key_prefix)

    return build_app(
        ServiceSpec(
            name="escalation",
            settings=cfg,
            wire=wire,
            uses_postgres=True,
            uses_redis=True,
            migrations=Path(__file__).parent / "migrations",
            routes=api.routes(),
        )
    )
