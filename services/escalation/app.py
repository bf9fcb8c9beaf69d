"""Escalation service: routing, the agent queue and console, /metrics, /livez, /readyz."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from fastapi import FastAPI

from services.escalation.api import (
    REFUSALS,
    agent_router,
    console_router,
    live_router,
    sign_out_router,
)
from services.escalation.auth import AgentAuth, LoginThrottle
from services.escalation.bot_rating import bot_rating_router
from services.escalation.desk import AgentSkills, Desk
from services.escalation.handlers import EscalationHandlers
from services.escalation.live import CONSOLE_CHANNEL, AgentHub, ConsoleFeed
from services.escalation.policy import PolicyStore
from services.escalation.settings import EscalationSettings
from shared.events import (
    AssistSuggestedEvent,
    CustomerErasedEvent,
    ReplyGeneratedEvent,
    TurnContextualizedEvent,
)
from shared.fanout import Fanout
from shared.outbox import relaying
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = EscalationSettings


def create_app(settings: EscalationSettings | None = None) -> FastAPI:
    """Build the escalation service."""
    cfg = settings or EscalationSettings()
    auth = AgentAuth(
        {k: v.get_secret_value() for k, v in cfg.agents.items()},
        cfg.agent_token_secret.get_secret_value(),
        cfg.agent_token_ttl_s,
        tenants=cfg.tenants_by_agent(),
    )

    async def wire(infra: Infra, stack: AsyncExitStack) -> None:
        policies = PolicyStore(cfg.policy_path, cfg.policy_check_interval_s)
        desk = Desk(
            infra.require_pg(),
            infra.require_redis(),
            key_prefix=cfg.redis.key_prefix,
            handle_minutes=cfg.handle_minutes,
            agents_on_shift=cfg.agents_on_shift,
        )
        await stack.enter_async_context(relaying(desk.outbox))
        # Consoles on any replica hear what this replica consumes, and the other way round.
        hub = AgentHub()
        fanout = Fanout(
            infra.require_redis(), cfg.redis.key_prefix, channel=CONSOLE_CHANNEL, receiver=hub
        )
        await stack.enter_async_context(fanout.listening())
        feed = ConsoleFeed(fanout)
        handlers = EscalationHandlers(infra.bus, policies, desk, feed)
        infra.subscribe(
            Topic.TURN_CONTEXTUALIZED, TurnContextualizedEvent, handlers.on_turn_contextualized
        )
        infra.subscribe(Topic.REPLY_GENERATED, ReplyGeneratedEvent, handlers.on_reply_generated)
        infra.subscribe(Topic.ASSIST_SUGGESTED, AssistSuggestedEvent, handlers.on_assist_suggested)
        infra.subscribe(Topic.CUSTOMER_ERASED, CustomerErasedEvent, handlers.on_customer_erased)
        await auth.sync_versions(infra.require_pg())
        await stack.enter_async_context(
            auth.watching_versions(infra.require_pg(), cfg.token_version_refresh_s)
        )
        infra.provide(auth)
        infra.provide(desk)
        infra.provide(AgentSkills(cfg.agent_skills))
        infra.provide(hub)
        infra.provide(feed)
        infra.provide(LoginThrottle(infra.require_redis(), cfg.redis.key_prefix))

    return build_app(
        ServiceSpec(
            name="escalation",
            settings=cfg,
            wire=wire,
            uses_postgres=True,
            uses_redis=True,
            migrations=Path(__file__).parent / "migrations",
            routers=[
                console_router(),
                agent_router(),
                sign_out_router(),
                live_router(cfg.token_version_refresh_s),
                bot_rating_router(),
            ],
            refusals=REFUSALS,
            description="Routing to the bot or a person, the agent queue, tickets and console.",
        )
    )
