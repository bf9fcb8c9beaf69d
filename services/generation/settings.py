"""Generation service settings (env prefix `CBD_GENERATION_`)."""

import secrets
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.connectors import DEMO_CONNECTORS
from shared.settings import ServiceSettings

PACKAGE_DIR = Path(__file__).resolve().parent


def _new_canary() -> str:
    # "zq" + hex: no English word starts a reply like that, so the streaming guard rarely has
    # to hold a word back just because it could be the canary's beginning.
    return "zq" + secrets.token_hex(6)


class ReplyMode(StrEnum):
    """How bot replies are produced (`CBD_GENERATION_REPLY_MODE`)."""

    LLM = "llm"
    """The LLM's reply as the guardrails leave it; the care check's findings are recorded
    but not acted on (for a strong model, or to measure the check itself)."""
    LLM_CHECKED = "llm_checked"
    """The LLM's reply, released sentence by sentence once each passes the care check;
    regenerated once on failure, then composed without the LLM (the default)."""
    COMPOSED = "composed"
    """No LLM for replies: composed from the acknowledgement, knowledge and playbook."""


class GenerationSettings(ServiceSettings):
    """How the generation service runs and which LLM it talks to."""

    model_config = SettingsConfigDict(env_prefix="CBD_GENERATION_", extra="ignore")

    uses_postgres: ClassVar[bool] = False

    port: int = 8004
    llm_base_url: str = "http://127.0.0.1:8090/v1"
    """An OpenAI-compatible API: vLLM in production, llama.cpp's server locally."""
    llm_model: str = "smollm2-135m-instruct"
    llm_api_key: SecretStr | None = None
    max_tokens: int = Field(default=160, ge=1)
    assist_suggestions: bool = True
    """Whether agents get LLM-suggested replies (coaching tips come regardless)."""
    assist_max_tokens: int = Field(default=80, ge=1)
    """Length of a reply suggested to an agent."""
    assist_max_age_s: float = Field(default=10.0, ge=0.0)
    """A turn older than this gets coaching tips only: the agent has moved on."""
    assist_min_interval_s: float = Field(default=5.0, ge=0.0)
    """At most one suggested reply per conversation this often; a burst gets tips only."""
    temperature: float = Field(default=0.4, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    connect_timeout_s: float = Field(default=2.0, gt=0.0)
    first_token_timeout_s: float = Field(default=4.0, gt=0.0)
    """No first token by then (retries included): the customer gets the fallback reply, so a
    slow or hung server costs them at most this long (the issue's 5 s bound)."""
    total_timeout_s: float = Field(default=30.0, gt=0.0)
    llm_retries: int = Field(default=1, ge=0)
    """Extra attempts for a request that failed before any text (refused, 5xx, 429)."""
    llm_retry_backoff_s: float = Field(default=0.2, ge=0.0)
    breaker_failures: int = Field(default=3, ge=1)
    """Failed requests in a row that open the circuit breaker (fallback at once while open)."""
    breaker_reset_s: float = Field(default=15.0, gt=0.0)
    """How long the breaker stays open before one trial request is let through."""
    delta_flush_ms: int = Field(default=40, ge=0)
    """Streamed text is batched into one event per this many milliseconds (the first slice
    goes out at once, for time to first token)."""
    tenant: str = "demo"
    """Whose knowledge base and commitment policy to use: a folder under `knowledge_dir`."""
    knowledge_dir: Path = PACKAGE_DIR / "knowledge"
    knowledge_top_k: int = Field(default=3, ge=0)
    """Knowledge entries carried in the prompt per turn, at most."""
    knowledge_min_score: float = Field(default=0.08, ge=0.0, le=1.0)
    """Cosine similarity below which an entry is not relevant enough to carry."""
    playbooks_path: Path = PACKAGE_DIR / "playbooks.yaml"
    baseline_share: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of conversations that get the plain baseline prompt (0: everyone gets care)."""
    variant_salt: str = ""
    """Change it to reshuffle which conversations get which variant (a new experiment)."""
    reply_mode: ReplyMode = ReplyMode.LLM_CHECKED
    """`llm`, `llm_checked` (default: what the small embedded model needs) or `composed`."""
    relevance_check: bool = True
    """Score replies for relevance with the MiniLM embedder (loaded at start-up)."""
    relevance_threshold: float = Field(default=0.38, ge=-1.0, le=1.0)
    """Below this similarity to the message and knowledge a reply is off topic; calibrated on
    the dev split of `data/relevance_pairs.jsonl` (`python -m services.generation.relevance`)."""
    language_check: bool = True
    """Fail a reply sentence written in another language than the customer's (py3langid;
    only text long enough to identify is judged)."""
    connector_url: str = ""
    """Base URL of the tenant's business systems (orders, accounts, refunds); empty: the bot
    runs no actions and says a colleague will check. `make run` points it at the stand-in CRM."""
    connector_token: SecretStr | None = None
    """Bearer token for the tenant's systems, if they need one."""
    actions_chosen_by: Literal["intent", "model"] = "intent"
    """Who picks a turn's actions: `intent` (deterministic from the intent and entities) or
    `model` (the LLM's tool calls, for servers that take OpenAI `tools`, e.g. vLLM with
    `--enable-auto-tool-choice`); when the model cannot choose, the intent's plan is used."""
    actions_choice_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """How long the model may take to choose actions before the intent's plan is used."""
    connectors_path: Path = DEMO_CONNECTORS
    """What the tenant's systems offer (YAML, validated at start-up: `shared/connectors.py`)."""
    canary: str = Field(default_factory=_new_canary, min_length=8)
    """A secret marker in the system prompt: a reply that contains it is a prompt leak."""
