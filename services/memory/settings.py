"""Memory service settings (env prefix `CBD_MEMORY_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MemorySettings(ServiceSettings):
    """How the memory service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_MEMORY_", extra="ignore")

    port: int = 8002
    recent_turns: int = Field(default=12, ge=0)
    """How many earlier turns travel with each new turn."""
    session_ttl_s: int = Field(default=24 * 3600, ge=60)
    """How long a conversation's hot context stays in Redis after its last turn."""
