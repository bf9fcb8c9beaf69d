"""Memory service: subscribers, the customer admin API, /metrics, /livez and /readyz."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from fastapi import FastAPI

from services.memory.api import customer_router
from services.memory.context import ContextAssembler, ContextLimits
from services.memory.crm import CrmSync
from services.memory.customers import CustomerStore
from services.memory.erasure import Eraser
from services.memory.extraction import LlmExtractor, RuleExtractor
from services.memory.handlers import MemoryHandlers
from services.memory.settings import MemorySettings
from services.memory.terms import load_terms
from services.memory.turns import TurnStore
from shared.connectors import ConnectorClient, load_connectors
from shared.embedding import MiniLmEmbedder
from shared.events import CustomerErasedEvent, ReplyGeneratedEvent, TurnAnalyzedEvent
from shared.llm import ChatClient
from shared.outbox import EVENT, Outbox, publishing, relaying
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = MemorySettings


def create_app(settings: MemorySettings | None = None) -> FastAPI:
    """Build the memory service."""
    cfg = settings or MemorySettings()

    async def wire(infra: Infra, stack: AsyncExitStack) -> None:
        pg, redis = infra.require_pg(), infra.require_redis()
        embedder = MiniLmEmbedder()
        turns = TurnStore(
            pg,
            redis,
            key_prefix=cfg.redis.key_prefix,
            keep=cfg.recent_turns,
            ttl_s=cfg.session_ttl_s,
        )
        customers = CustomerStore(
            pg,
            redis,
            embedder,
            key_prefix=cfg.redis.key_prefix,
            identity_ttl_s=cfg.identity_cache_ttl_s,
        )
        assembler = ContextAssembler(
            pg,
            ContextLimits(
                token_budget=cfg.context_token_budget,
                recall_k=cfg.recall_k,
                extra_k=cfg.recall_extra_k,
                min_relevance=cfg.recall_min_relevance,
            ),
        )
        llm_extractor = None
        if cfg.llm_extractor_url:
            llm = ChatClient(
                cfg.llm_extractor_url,
                cfg.llm_extractor_model,
                api_key=(
                    cfg.llm_extractor_api_key.get_secret_value()
                    if cfg.llm_extractor_api_key
                    else None
                ),
                total_timeout_s=cfg.llm_extractor_timeout_s,
            )
            stack.push_async_callback(llm.aclose)
            llm_extractor = LlmExtractor(llm)
        crm = None
        if cfg.connector_url:
            spec = load_connectors(cfg.connectors_path)
            if cfg.crm_action not in spec.actions:
                raise ValueError(
                    f"CBD_MEMORY_CRM_ACTION {cfg.crm_action!r} is not an action of "
                    f"{cfg.connectors_path}"
                )
            token = cfg.connector_token.get_secret_value() if cfg.connector_token else ""
            connector = ConnectorClient(spec, base_url=cfg.connector_url, token=token)
            stack.push_async_callback(connector.aclose)
            crm = CrmSync(
                connector,
                customers,
                action=cfg.crm_action,
                interval_s=cfg.crm_sync_interval_s,
                wait_s=cfg.crm_wait_s,
            )
            stack.push_async_callback(crm.drain)
        handlers = MemoryHandlers(
            infra.bus,
            turns,
            customers,
            assembler,
            embedder,
            RuleExtractor(embedder, terms=load_terms(cfg.extraction_terms_path)),
            keep=cfg.recent_turns,
            llm_extractor=llm_extractor,
            crm=crm,
            reply_wait_s=cfg.reply_wait_s,
        )
        infra.subscribe(Topic.TURN_ANALYZED, TurnAnalyzedEvent, handlers.on_turn_analyzed)
        infra.subscribe(Topic.REPLY_GENERATED, ReplyGeneratedEvent, handlers.on_reply_generated)
        outbox = Outbox(
            pg,
            "memory",
            {EVENT: publishing(infra.bus, CustomerErasedEvent)},
            service="memory",
        )
        await stack.enter_async_context(relaying(outbox))
        infra.provide(customers)
        infra.provide(Eraser(customers, outbox))

    return build_app(
        ServiceSpec(
            name="memory",
            settings=cfg,
            wire=wire,
            uses_postgres=True,
            uses_redis=True,
            migrations=Path(__file__).parent / "migrations",
            routers=[customer_router(cfg.admin_token.get_secret_value())],
            description="Customer memory: profiles, identities, memories, issues, erasure.",
        )
    )
