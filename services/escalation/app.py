"""Escalation service: FastStream subscribers plus /metrics, /livez and /readyz."""

from __future__ import annotations

from contextlib import AsyncExitStack

from starlette.applications import Starlette

from services.escalation.handlers import EscalationHandlers
from services.escalation.policy import PolicyStore
from services.escalation.settings import EscalationSettings
from shared.events import TurnContextualizedEvent
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = EscalationSettings


def create_app(settings: EscalationSettings | None = None) -> Starlette:
    """Build the escalation service."""

    cfg = settings or EscalationSettings()

    async def wire(infra: Infra, _: AsyncExitStack) -> None:
        policies = PolicyStore(cfg.policy_path, cfg.policy_check_interval_s)
        handlers = EscalationHandlers(infra.bus, policies)
        infra.subscribe(
            Topic.TURN_CONTEXTUALIZED, TurnContextualizedEvent, handlers.on_turn_contextualized
        )

    return build_app(ServiceSpec(name="escalation", settings=cfg, wire=wire))
