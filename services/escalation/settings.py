"""Escalation service settings (env prefix `CBD_ESCALATION_`)."""

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.escalation.policy import DEFAULT_POLICY_PATH
from shared.credentials import require_secret
from shared.events import Identifier
from shared.passwords import hash_problems
from shared.settings import ServiceSettings

DEV_AGENTS = {"agent": "agent"}
DEV_SECRET = "dev-only-agent-token-secret"  # noqa: S105 (refused in production below)
DEV_TENANTS = ["default", "demo"]
"""The tenants of a development set-up: keyless requests and ingest's development keys."""


class EscalationSettings(ServiceSettings):
    """How the escalation service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_ESCALATION_", extra="ignore")

    port: int = 8003
    policy_path: Path = DEFAULT_POLICY_PATH
    """The YAML policy the platform team edits; changes apply without a restart."""
    policy_check_interval_s: float = Field(default=2.0, ge=0.0)
    agents: dict[str, SecretStr] = Field(
        default_factory=lambda: {k: SecretStr(v) for k, v in DEV_AGENTS.items()}
    )
    """Agent ids and argon2 password hashes, as JSON: {"alice": "$argon2id$...", ...}
    (`cbd agents hash-password`); plain-text passwords are accepted in development only."""
    agent_token_secret: SecretStr = SecretStr(DEV_SECRET)
    agent_token_ttl_s: int = Field(default=12 * 3600, ge=60)
    token_version_refresh_s: float = Field(default=2.0, gt=0)
    """How often each replica re-reads agents' token versions: the longest a token revoked on
    another replica (sign-out everywhere, a password change) still works here."""
    agent_tenants: dict[str, Identifier | list[Identifier]] = Field(default_factory=dict)
    """Which tenant each agent works for, as JSON: {"alice": "acme", "lead": ["acme", "b"]};
    an agent not listed works for the `default` tenant (the development `agent`, for the
    development tenants). An agent sees, claims and answers only its tenants' tickets, and
    its console hears only its tenants' conversations."""
    agent_skills: dict[str, list[str]] = Field(default_factory=dict)
    """Which skill queues each agent serves, as JSON: {"alice": ["billing", "fraud"]}; an
    agent not listed serves every queue. Skills are those of `shared/data/intents.yaml`."""
    handle_minutes: float = Field(default=4.0, gt=0)
    """Typical minutes an agent spends per conversation, for the wait the customer is told."""
    agents_on_shift: int = Field(default=2, ge=1)

    def tenants_by_agent(self) -> dict[str, list[str]]:
        """Each listed agent's tenants; the development `agent`, unless listed, serves the
        development tenants (it is refused in production)."""
        tenants = {a: [t] if isinstance(t, str) else list(t) for a, t in self.agent_tenants.items()}
        for agent in set(DEV_AGENTS) & set(self.agents) - set(tenants):
            tenants[agent] = list(DEV_TENANTS)
        return tenants

    @model_validator(mode="after")
    def _tenants_of_known_agents(self) -> Self:
        # A misspelt agent id would leave the real agent in the `default` tenant unnoticed.
        if unknown := sorted(set(self.agent_tenants) - set(self.agents)):
            raise ValueError(f"CBD_ESCALATION_AGENT_TENANTS names unknown agents: {unknown}")
        if empty := sorted(a for a, t in self.agent_tenants.items() if not t):
            raise ValueError(f"CBD_ESCALATION_AGENT_TENANTS gives no tenant to: {empty}")
        return self

    @model_validator(mode="after")
    def _no_dev_agents_in_production(self) -> Self:
        if self.environment == "production":
            if self.agent_token_secret.get_secret_value() == DEV_SECRET:
                raise ValueError("set CBD_ESCALATION_AGENT_TOKEN_SECRET in production")
            require_secret(
                "CBD_ESCALATION_AGENT_TOKEN_SECRET", self.agent_token_secret.get_secret_value()
            )
            if {k: v.get_secret_value() for k, v in self.agents.items()} == DEV_AGENTS:
                raise ValueError("set CBD_ESCALATION_AGENTS in production")
            if not self.agents:
                raise ValueError("CBD_ESCALATION_AGENTS lists no agents")
            if set(DEV_AGENTS) & set(self.agents):
                raise ValueError("the development `agent` account is refused in production")
            plain = {k: v.get_secret_value() for k, v in self.agents.items()}
            if problems := hash_problems("CBD_ESCALATION_AGENTS", plain):
                raise ValueError(problems[0])
        return self
