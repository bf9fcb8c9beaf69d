"""Escalation service settings (env prefix `CBD_ESCALATION_`)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class EscalationSettings(ServiceSettings):
    """How the escalation service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_ESCALATION_", extra="ignore")

    port: int = 8003
