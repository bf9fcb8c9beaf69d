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
    fetch_max_wait_ms: int | None = Field(default=500, ge=1)
    """How long audit's consumers let a fetch wait (None: `CBD_KAFKA_FETCH_MAX_WAIT_MS`).
    Audit is off the reply path, so the longer wait saves idle polling (see "CPU per turn"):
    its records land up to half a second later. It was the default once before and was
    taken back when a reply still in flight at its customer's erasure reached audit's and the
    care loop's tables after the erasure had run; erasure receipts now store such late
    records erased (`shared.erasure`), so the wait no longer decides what outlives an erasure."""
    eraser_dsn: SecretStr | None = None
    """PostgreSQL as the `cbd_audit_eraser` role, for erasures; unset: the service's own DSN
    (production: the service connects as an insert-only `cbd_audit_writer` member)."""

    @model_validator(mode="after")
    def _strong_key_in_production(self) -> Self:
        if self.environment == "production":
            require_secret("CBD_AUDIT_CHAIN_KEY", self.chain_key.get_secret_value())
        return self
