"""Audit service settings (env prefix `CBD_AUDIT_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.audit.care_settings import CareSettings
from shared.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    """How the audit service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_AUDIT_", extra="ignore")

    port: int = 8005
    care: CareSettings = Field(default_factory=CareSettings)
    """The care loop's settings (prefix `CBD_CARE_`)."""
