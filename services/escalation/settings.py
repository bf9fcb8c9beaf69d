"""Escalation service settings (env prefix `CBD_ESCALATION_`)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.escalation.policy import DEFAULT_POLICY_PATH
from shared.settings import ServiceSettings


class EscalationSettings(ServiceSettings):
    """How the escalation service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_ESCALATION_", extra="ignore")

    port: int = 8003
    policy_path: Path = DEFAULT_POLICY_PATH
    """The YAML policy the platform team edits; changes apply without a restart."""
    policy_check_interval_s: float = Field(default=2.0, ge=0.0)
