"""Settings every service shares: where the broker, database and cache are, and how to serve.

Each service subclasses `ServiceSettings` with its own env prefix (`CBD_<SERVICE>_`); the
infrastructure addresses are read once under their own prefixes (`CBD_KAFKA_`, `CBD_PG_`,
`CBD_REDIS_`) so one deployment-wide variable points every service at the same servers.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.topics import Topic


class KafkaSettings(BaseSettings):
    """Kafka client settings, tuned for low per-hop latency (see docs/architecture.md)."""

    model_config = SettingsConfigDict(env_prefix="CBD_KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    create_topics: bool = True
    """Create missing topics at start-up (dev); in production an operator owns them."""
    fetch_max_wait_ms: int = Field(default=100, ge=1)
    """How long an empty fetch waits for data. Each consumer polls this often while idle: on the
    embedded broker with 20 consumers, 20 ms cost 33% of a core in the broker and 23% in the
    clients, 100 ms 16% and 9% with the same hop latency (p50 13 vs 16 ms), 250 ms 6% and 5%
    but p50 58 ms (2-core VM, aiokafka against tansu)."""
    background_fetch_max_wait_ms: int = Field(default=500, ge=1)
    """The fetch wait of consumers no customer waits on (erasures, ratings, reviews): they
    poll the broker less often while idle, which is most of a quiet platform's CPU."""
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    request_timeout_ms: int = 15_000
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """PLAINTEXT for the embedded broker; SASL_SSL (TLS + SCRAM) on Kubernetes."""
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    """CA bundle that signed the brokers' certificates (Strimzi's cluster CA); None: system CAs."""
    instance_id: str | None = Field(default=None, max_length=120, pattern=r"^[A-Za-z0-9._-]*$")
    """This replica's stable name (the pod's name on Kubernetes, `<service>-<n>` under the
    embedded supervisor). Set: every consumer joins its group as a static member (KIP-345,
    `group.instance.id` = group id + this name), so the same replica restarted within the
    session timeout gets its partitions back without a rebalance. It must be unique among the
    live replicas of a service: two consumers with one id fence each other out. Unset or empty:
    dynamic membership. Kafka's rule for the characters (ASCII letters, digits, `._-`)."""

    @model_validator(mode="after")
    def _sasl_has_credentials(self) -> Self:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password and self.sasl_password.get_secret_value()
        ):
            raise ValueError(
                "CBD_KAFKA_SASL_USERNAME and CBD_KAFKA_SASL_PASSWORD are needed with SASL"
            )
        return self

    def topic(self, topic: Topic) -> str:
        """The physical topic name for a logical topic."""
        return f"{self.topic_prefix}{topic.value}"

    def group_instance_id(self, group_id: str) -> str | None:
        """This replica's static member id in `group_id`; None: dynamic membership.

        The group id is part of it although Kafka scopes instance ids per group, so a broker
        that keeps them in one namespace still sees one id per consumer.
        """
        return f"{group_id}.{self.instance_id}" if self.instance_id else None


class PostgresSettings(BaseSettings):
    """Where PostgreSQL is."""

    model_config = SettingsConfigDict(env_prefix="CBD_PG_", extra="ignore")

    dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    pool_min_size: int = 1
    pool_max_size: int = 5
    command_timeout_s: float = 10.0


class RedisSettings(BaseSettings):
    """Where Redis is."""

    model_config = SettingsConfigDict(env_prefix="CBD_REDIS_", extra="ignore")

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    key_prefix: str = "cbd:"
    max_connections: int = Field(default=100, ge=1)
    """Pooled connections per process; a command beyond them waits for one."""
    pool_wait_s: float = Field(default=2.0, gt=0)
    """How long a command waits for a pooled connection before it fails."""


class ServiceSettings(BaseSettings):
    """What every service needs to run; subclasses set `env_prefix` and `port`."""

    model_config = SettingsConfigDict(extra="ignore")

    uses_postgres: ClassVar[bool] = True
    """Whether the service talks to PostgreSQL; production asks for credentials only if so."""
    uses_redis: ClassVar[bool] = True

    environment: Literal["development", "production"] = Field(
        default="development", validation_alias=AliasChoices("CBD_ENVIRONMENT")
    )
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Serve /metrics on this port only, on a listener of its own (Kubernetes: Prometheus may
    reach it, the ingress never routes to it). Unset: /metrics on the main port (`make run`)."""
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("CBD_LOG_LEVEL"))
    log_format: Literal["json", "text"] = Field(
        default="json", validation_alias=AliasChoices("CBD_LOG_FORMAT")
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    handler_attempts: int = Field(default=3, ge=1)
    """Tries a failing event gets before it goes to the dead-letter topic."""

    @model_validator(mode="after")
    def _metrics_port_is_its_own(self) -> Self:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("the metrics port must differ from the service's port")
        return self

    @model_validator(mode="after")
    def _no_dev_secrets_in_production(self) -> Self:
        # Local defaults are passwordless; production must never fall back to them silently.
        if self.environment == "production":
            pg_dsn = self.postgres.dsn.get_secret_value()
            if self.uses_postgres and urlsplit(pg_dsn).password is None:
                raise ValueError("CBD_PG_DSN needs a password when CBD_ENVIRONMENT=production")
            if self.uses_redis and urlsplit(self.redis.url.get_secret_value()).password is None:
                raise ValueError("CBD_REDIS_URL needs a password when CBD_ENVIRONMENT=production")
        return self
