"""Generation service settings (env prefix `CBD_GENERATION_`)."""

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class GenerationSettings(ServiceSettings):
    """How the generation service runs and which LLM it talks to."""

    model_config = SettingsConfigDict(env_prefix="CBD_GENERATION_", extra="ignore")

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
    connect_timeout_s: float = 2.0
    first_token_timeout_s: float = 8.0
    """No first token by then: the customer gets the fallback reply instead of a wait."""
    total_timeout_s: float = 30.0
    delta_flush_ms: int = Field(default=40, ge=0)
    """Streamed text is batched into one event per this many milliseconds."""
