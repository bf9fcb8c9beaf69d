"""Audit service settings (env prefix `CBD_AUDIT_`)."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    """How the audit service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_AUDIT_", extra="ignore")

    uses_redis: ClassVar[bool] = False

    port: int = 8005
