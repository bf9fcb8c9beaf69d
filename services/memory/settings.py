"""Memory service settings (env prefix `CBD_MEMORY_`)."""

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.memory.terms import DEFAULT_TERMS_PATH
from shared.connectors import DEMO_CONNECTORS
from shared.credentials import require_secret
from shared.settings import ServiceSettings

DEV_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105 (refused in production below)


class MemorySettings(ServiceSettings):
    """How the memory service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_MEMORY_", extra="ignore")

    port: int = 8002
    recent_turns: int = Field(default=12, ge=0)
    """How many earlier turns travel with each new turn (fewer when the budget is short)."""
    session_ttl_s: int = Field(default=24 * 3600, ge=60)
    """How long a conversation's hot context stays in Redis after its last turn."""
    identity_cache_ttl_s: int = Field(default=3600, ge=10)
    context_token_budget: int = Field(default=700, ge=50)
    """Approximate tokens the assembled context may take in the prompt."""
    recall_k: int = Field(default=3, ge=1, le=20)
    """Memories always recalled for a message (the most similar ones)."""
    recall_extra_k: int = Field(default=2, ge=0, le=20)
    recall_min_relevance: float = Field(default=0.35, ge=-1.0, le=1.0)
    """Cosine similarity a memory beyond the first `recall_k` needs to be included."""
    admin_token: SecretStr = SecretStr(DEV_ADMIN_TOKEN)
    """Bearer token for the customer admin API (export, erase, identities, profile)."""
    llm_extractor_url: str | None = None
    """An OpenAI-compatible API base (ending in /v1) that extracts memories the rules miss;
    off when unset."""
    llm_extractor_model: str = "default"
    llm_extractor_api_key: SecretStr | None = None
    """Bearer token for the extractor's server, if it needs one."""
    llm_extractor_timeout_s: float = Field(default=5.0, gt=0.0)
    """The whole answer's budget: extraction must not hold up the turn for long."""
    extraction_terms_path: Path = DEFAULT_TERMS_PATH
    """The word lists the rule extractor recognises (validated at start-up)."""
    connector_url: str = ""
    """Base URL of the tenant's business systems; with it, each customer's tier, lifetime value
    and purchase history come from the CRM (`crm_action`). Empty: the profile has only what the
    admin API set. `make run` points it at the stand-in CRM."""
    connector_token: SecretStr | None = None
    """Bearer token for the tenant's systems, if they need one."""
    connectors_path: Path = DEMO_CONNECTORS
    """What the tenant's systems offer (YAML, validated at start-up: `shared/connectors.py`)."""
    crm_action: str = "account_lookup"
    """The connector action that describes a customer (facts `tier`, `lifetime_value`)."""
    crm_sync_interval_s: int = Field(default=6 * 3600, ge=60)
    """How long a customer's CRM facts are trusted before the CRM is asked again."""
    crm_wait_s: float = Field(default=0.3, ge=0.0, le=5.0)
    """How long a turn waits for a due CRM sync before going on without it (the sync finishes
    in the background and the next turn has it): a slow CRM never holds a reply up for long."""

    reply_wait_s: float = Field(default=2.0, ge=0.0, le=30.0)
    """How long a turn waits for the reply its customer saw to be stored before its context is
    read (`TurnReceived.after_reply_id`); after that it goes on without it, and
    `cbd_memory_reply_waits_total{outcome="timeout"}` counts it."""

    @model_validator(mode="after")
    def _no_dev_admin_in_production(self) -> Self:
        if self.environment == "production":
            require_secret("CBD_MEMORY_ADMIN_TOKEN", self.admin_token.get_secret_value())
        return self
