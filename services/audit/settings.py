"""Audit service settings (env prefix `CBD_AUDIT_`)."""

from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.audit.care_settings import CareSettings
from shared.credentials import require_secret
from shared.settings import ServiceSettings

DEV_CHAIN_KEY = "dev-only-audit-chain-key"


class AuditSettings(ServiceSettings):
    """How the audit service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_AUDIT_", extra="ignore")

    uses_redis: ClassVar[bool] = False

    port: int = 8005
    care: CareSettings = Field(default_factory=CareSettings)
    """The care loop's settings (prefix `CBD_CARE_`)."""
    chain_key: SecretStr = SecretStr(DEV_CHAIN_KEY)
    """The HMAC key of the audit chain (32+ random bytes in production). Keep it apart from
    the database: whoever holds it and can write the table could forge the chain."""
    fetch_max_wait_ms: int | None = Field(default=None, ge=1)
    """How long audit's consumers let a fetch wait (unset: `CBD_KAFKA_FETCH_MAX_WAIT_MS`).
    Audit is off the reply path, so a longer wait saves idle polling (see "CPU per turn"), but
    not by default: at 500 ms a reply still in flight when its customer asked for erasure
    reached audit's and the care loop's tables after the erasure had run (the e2e erasure scan
    found it). Erasure receipts now store such late records erased (`shared.erasure`), so a
    longer wait no longer lets a record outlive an erasure; the default was left as it is."""
    eraser_dsn: SecretStr | None = None
    """PostgreSQL as the `cbd_audit_eraser` role, for erasures; unset: the service's own DSN
    (production: the service connects as an insert-only `cbd_audit_writer` member)."""

    @model_validator(mode="after")
    def _strong_key_in_production(self) -> Self:
        if self.environment == "production":
            require_secret("CBD_AUDIT_CHAIN_KEY", self.chain_key.get_secret_value())
        return self
