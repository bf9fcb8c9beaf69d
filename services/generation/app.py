"""Generation service: FastStream subscribers plus /metrics, /livez and /readyz."""

from __future__ import annotations

from contextlib import AsyncExitStack

from fastapi import FastAPI

from services.generation.actions import ActionDesk
from services.generation.breaker import CircuitBreaker
from services.generation.care import CareKit
from services.generation.fence import OwnershipFence
from services.generation.handlers import GenerationHandlers, build_prompting
from services.generation.settings import GenerationSettings
from shared.connectors import ConnectorClient, load_connectors
from shared.embedding import MiniLmEmbedder
from shared.events import TurnRoutedEvent
from shared.intent import IntentReader
from shared.llm import ChatClient
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = GenerationSettings


def create_app(settings: GenerationSettings | None = None) -> FastAPI:
    """Build the generation service."""
    cfg = settings or GenerationSettings()
    # Loaded before start-up completes: a broken playbook or tenant file fails the deploy,
    # not the first customer's turn.
    prompts, rails = build_prompting(cfg)

    async def wire(infra: Infra, stack: AsyncExitStack) -> None:
        api_key = cfg.llm_api_key.get_secret_value() if cfg.llm_api_key else None
        llm = ChatClient(
            cfg.llm_base_url,
            cfg.llm_model,
            api_key=api_key,
            connect_timeout_s=cfg.connect_timeout_s,
            first_token_timeout_s=cfg.first_token_timeout_s,
            total_timeout_s=cfg.total_timeout_s,
            retries=cfg.llm_retries,
            retry_backoff_s=cfg.llm_retry_backoff_s,
            breaker=CircuitBreaker(cfg.breaker_failures, cfg.breaker_reset_s),
        )
        stack.push_async_callback(llm.aclose)
        fence = OwnershipFence(infra.require_redis(), cfg.redis.key_prefix)
        # One MiniLM encoder for the care check's relevance and the turn's intent.
        embedder = MiniLmEmbedder()
        care = CareKit.build(cfg, prompts.knowledge, embedder=embedder)
        client = None
        if cfg.connector_url:
            token = cfg.connector_token.get_secret_value() if cfg.connector_token else ""
            client = ConnectorClient(
                load_connectors(cfg.connectors_path), base_url=cfg.connector_url, token=token
            )
            stack.push_async_callback(client.aclose)
        chooser = None
        if client is not None and cfg.actions_chosen_by == "model":
            # Its own budget: choosing actions must not take a reply's whole time.
            chooser = ChatClient(
                cfg.llm_base_url,
                cfg.llm_model,
                api_key=api_key,
                connect_timeout_s=cfg.connect_timeout_s,
                total_timeout_s=cfg.actions_choice_timeout_s,
            )
            stack.push_async_callback(chooser.aclose)
        actions = ActionDesk(IntentReader(embedder), client, chooser)
        handlers = GenerationHandlers(
            infra.bus, llm, cfg, fence, prompts, rails, care=care, actions=actions
        )
        stack.push_async_callback(handlers.aclose)
        infra.subscribe(Topic.TURN_ROUTED, TurnRoutedEvent, handlers.on_turn_routed)

    return build_app(ServiceSpec(name="generation", settings=cfg, wire=wire, uses_redis=True))
