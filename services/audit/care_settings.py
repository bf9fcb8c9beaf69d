"""Settings of the care loop (env prefix `CBD_CARE_`): outcomes, review sampling, follow-ups."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.events import Identifier
from shared.passwords import hash_problems

DEFAULT_IDLE_TIMEOUTS_S: dict[str, float] = {
    # A web chat left open for half an hour is over; a text conversation lives for a day, as
    # WhatsApp's customer-service window does; a voice call ends with the call.
    "web": 1800.0,
    "api": 1800.0,
    "voice": 120.0,
    "sms": 86400.0,
    "whatsapp": 86400.0,
    "email": 259200.0,
}


DEV_REVIEWERS = {"reviewer": "reviewer"}
DEV_TENANTS = ["default", "demo"]
"""The tenants of a development set-up: keyless requests and ingest's development keys."""
DEV_REVIEWER_SECRET = "dev-only-reviewer-token-secret"  # noqa: S105 (refused in production)


class CareSettings(BaseSettings):
    """How the care loop measures, samples and follows up."""

    model_config = SettingsConfigDict(env_prefix="CBD_CARE_", extra="ignore")

    idle_timeout_s: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_IDLE_TIMEOUTS_S))
    """Seconds without a turn or reply after which a conversation closes, per channel
    (JSON, e.g. `{"web": 900}`); channels not listed use `web`'s."""
    fcr_window_days: float = Field(default=7.0, gt=0)
    """A resolved conversation counts as first-contact resolution when the customer has not come
    back about the same issue within this many days."""
    sweep_interval_s: float = Field(default=30.0, gt=0)
    """How often each replica looks for idle conversations, settled FCR and due follow-ups."""
    review_sample_share: float = Field(default=0.05, ge=0, le=1)
    """Share of bot replies queued for review at random (flagged, low-CSAT and escalated
    conversations' replies are always queued)."""
    low_csat_max: int = Field(default=2, ge=1, le=5)
    """Ratings at or below this queue the rated reply for review."""
    environment: Literal["development", "production"] = Field(
        default="development", validation_alias=AliasChoices("CBD_ENVIRONMENT")
    )
    reviewers: dict[str, SecretStr] = Field(
        default_factory=lambda: {k: SecretStr(v) for k, v in DEV_REVIEWERS.items()}
    )
    """Reviewer ids and argon2 password hashes, as JSON: {"rita": "$argon2id$...", ...}
    (`cbd agents hash-password`); plain-text passwords are accepted in development only."""
    reviewer_tenants: dict[str, Identifier | list[Identifier]] = Field(default_factory=dict)
    """Which tenant each reviewer works for, as JSON: {"rita": "acme", "lead": ["a", "b"]};
    a reviewer not listed works for the `default` tenant (the development `reviewer`, for the
    development tenants) and sees only its tenants' replies."""
    reviewer_token_secret: SecretStr = SecretStr(DEV_REVIEWER_SECRET)
    reviewer_token_ttl_s: int = 12 * 3600
    unresolved_dispositions: list[str] = Field(
        default_factory=lambda: ["unresolved", "callback", "transferred", "abandoned"]
    )
    """Agent dispositions that mean the issue was not resolved (so no FCR)."""

    followup_enabled: bool = True
    followup_after_hours: float = Field(default=24.0, gt=0)
    """An open issue nobody has mentioned for this long gets one follow-up."""
    followup_consent_key: str = "follow_up"
    """The consent (in memory's customer record) that allows proactive messages."""
    quiet_hours_start: int = Field(default=21, ge=0, le=23)
    quiet_hours_end: int = Field(default=8, ge=0, le=23)
    quiet_timezone: str = "UTC"
    """The zone quiet hours are in (the tenant's; customers' own zones are not known)."""
    whatsapp_window_hours: float = 24.0
    whatsapp_template: str | None = None
    """An approved WhatsApp template for follow-ups outside the 24-hour window; without one,
    such follow-ups are skipped."""

    def tenants_by_reviewer(self) -> dict[str, list[str]]:
        """Each listed reviewer's tenants; the development `reviewer`, unless listed, serves
        the development tenants (it is refused in production)."""
        tenants = {
            r: [t] if isinstance(t, str) else list(t) for r, t in self.reviewer_tenants.items()
        }
        for reviewer in set(DEV_REVIEWERS) & set(self.reviewers) - set(tenants):
            tenants[reviewer] = list(DEV_TENANTS)
        return tenants

    @model_validator(mode="after")
    def _tenants_of_known_reviewers(self) -> Self:
        # A misspelt reviewer id would leave the real reviewer in `default` unnoticed.
        if unknown := sorted(set(self.reviewer_tenants) - set(self.reviewers)):
            raise ValueError(f"CBD_CARE_REVIEWER_TENANTS names unknown reviewers: {unknown}")
        if empty := sorted(r for r, t in self.reviewer_tenants.items() if not t):
            raise ValueError(f"CBD_CARE_REVIEWER_TENANTS gives no tenant to: {empty}")
        return self

    @model_validator(mode="after")
    def _no_dev_reviewers_in_production(self) -> Self:
        if self.environment == "production":
            if self.reviewer_token_secret.get_secret_value() == DEV_REVIEWER_SECRET:
                raise ValueError("set CBD_CARE_REVIEWER_TOKEN_SECRET in production")
            plain = {k: v.get_secret_value() for k, v in self.reviewers.items()}
            if plain == DEV_REVIEWERS:
                raise ValueError("set CBD_CARE_REVIEWERS in production")
            if set(DEV_REVIEWERS) & set(plain):
                raise ValueError("the development `reviewer` account is refused in production")
            if problems := hash_problems("CBD_CARE_REVIEWERS", plain):
                raise ValueError(problems[0])
        return self

    def idle_timeout_for(self, channel: str) -> float:
        """The idle timeout of `channel` in seconds."""
        return self.idle_timeout_s.get(channel, self.idle_timeout_s.get("web", 1800.0))
