"""Ingest service settings (env prefix `CBD_INGEST_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    """How the ingest service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_INGEST_", extra="ignore")

    port: int = 8000
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    """Requests larger than this are refused with 413 before they are parsed."""
