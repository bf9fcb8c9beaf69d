"""Ingest service settings (env prefix `CBD_INGEST_`)."""

from typing import ClassVar, Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.credentials import require_explicit_origins, require_secret
from shared.settings import ServiceSettings

DEV_API_KEY = "dev-api-key"
DEV_WIDGET_KEY = "dev-widget-key"
DEV_IDENTITY_SECRET = "dev-identity-secret"  # noqa: S105


class WidgetKey(BaseModel):
    """A publishable key for the web widget: which tenant, and the sites allowed to use it."""

    tenant: str
    origins: list[str] = ["*"]
    """Origins (scheme://host[:port]) whose pages may open the widget; "*" allows any."""


class IngestSettings(ServiceSettings):
    """How the ingest service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_INGEST_", extra="ignore")

    uses_postgres: ClassVar[bool] = False

    port: int = 8000
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    """Requests larger than this are refused with 413 before they are parsed."""

    require_keys: bool = False
    """Refuse REST and WebSocket requests without a tenant key (always on in production)."""
    api_keys: dict[str, SecretStr] = Field(default_factory=lambda: {"demo": SecretStr(DEV_API_KEY)})
    """Secret server-to-server keys by tenant, as JSON: {"acme": "..."}; sent as X-API-Key."""
    widget_keys: dict[str, WidgetKey] = Field(
        default_factory=lambda: {DEV_WIDGET_KEY: WidgetKey(tenant="demo")}
    )
    """Publishable widget keys (they appear in page source), limited by the page's Origin."""
    widget_demo_key: str | None = DEV_WIDGET_KEY
    """The publishable key the /widget-demo page embeds (none: the page sends no key)."""
    identity_secrets: dict[str, SecretStr] = Field(
        default_factory=lambda: {"demo": SecretStr(DEV_IDENTITY_SECRET)}
    )
    """Per tenant: the key of the HMAC-SHA256 over a customer id that proves the site signed
    its user in (`customer_hash`); without a valid one a widget visitor stays anonymous."""
    customer_rate_per_min: int = Field(default=30, ge=1)
    tenant_rate_per_min: int = Field(default=3000, ge=1)
    ip_rate_per_min: int = Field(default=600, ge=1)
    """Requests and WebSocket connections per client address and minute, every path."""
    connection_frames_per_min: int = Field(default=60, ge=1)
    """Frames one WebSocket may send per minute; twice that closes it (1008)."""
    ws_max_frame_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    """Longest WebSocket frame read; longer ones are refused before they are parsed."""
    owner_ttl_s: int = Field(default=90 * 24 * 3600, ge=3600)
    """How long a conversation stays its customer's after its last message or connection."""
    messaging_tenant: str = "default"
    """The tenant whose customers write on the configured SMS, WhatsApp and voice numbers."""

    public_base_url: str | None = None
    """The URL providers call us on (e.g. https://chat.example.com); signatures cover it."""
    provider_dedupe_ttl_s: int = Field(default=48 * 3600, ge=60)
    """How long a provider's message id is remembered, to drop its redeliveries."""
    burst_window_ms: int = Field(default=2500, ge=0, le=30_000)
    """Messaging texts arriving within this window of each other become one turn."""
    conversation_idle_s: int = Field(default=24 * 3600, ge=60)
    """After this long without a message, the same number starts a new conversation."""

    twilio_account_sid: str = "AC00000000000000000000000000000000"
    twilio_auth_token: SecretStr = SecretStr("")
    """Twilio's auth token: signs its webhooks and authenticates our REST calls."""
    twilio_api_base: str = "https://api.twilio.com"
    twilio_sms_from: str = ""
    """Our SMS number (E.164), the From of replies."""
    twilio_whatsapp_from: str = ""
    """Our WhatsApp sender, e.g. whatsapp:+14155238886."""
    voice_language: str = "en-GB"
    voice_agent_number: str = ""
    """Where an escalated call is transferred (<Dial>); empty: the caller is told to hold."""
    voice_reply_timeout_s: float = Field(default=8.0, gt=0, le=14)
    """Longest a caller waits in silence for a reply (Twilio gives up on a webhook at 15 s)."""
    voice_max_waits: int = Field(default=2, ge=1, le=10)
    """Rounds of "one moment" before a caller whose reply is late is transferred."""
    voice_max_chars: int = Field(default=320, ge=60)
    """Replies are cut at a sentence end below this, so callers can barge in sooner."""

    survey_enabled: bool = True
    """Ask SMS and WhatsApp customers the closing question when their conversation closes."""
    survey_question: str = Field(
        default="Thanks for talking to us. How did we do? Reply 1-5 (1 = poor, 5 = great).",
        min_length=1,
        max_length=320,
    )
    survey_thanks: str = Field(default="Thank you, that helps us care better.", max_length=320)
    """Sent after an answer is recorded (empty: nothing is sent)."""
    survey_reply_window_s: int = Field(default=24 * 3600, ge=60)
    """How long the customer's next text is read as the answer to the closing question."""

    whatsapp_app_secret: SecretStr = SecretStr("")
    """Meta app secret: signs webhook bodies (X-Hub-Signature-256)."""
    whatsapp_verify_token: SecretStr = SecretStr("")
    """The token Meta echoes in the hub.challenge handshake."""
    whatsapp_access_token: SecretStr = SecretStr("")
    whatsapp_phone_number_id: str = ""
    whatsapp_api_base: str = "https://graph.facebook.com/v21.0"
    whatsapp_templates: dict[str, str] = Field(default_factory=dict)
    """Approved WhatsApp templates by name, as JSON: {"issue_follow_up": "HX..."}, the Twilio
    Content SID each name is sent as (Meta's Cloud API sends the name itself). Outside
    WhatsApp's 24-hour window only a template may be sent."""
    whatsapp_template_language: str = "en"
    """The language code of the templates, for Meta's Cloud API."""

    replay_turns: bool = True
    """Keep every accepted turn in Redis until it is answered, and publish it again when the
    broker lost it (services/ingest/replay.py)."""
    replay_after_s: float = Field(default=120.0, ge=5.0)
    """A turn with no reply (nor agent suggestion) this long after it was accepted, or after
    its last replay, is published again (a broker that lost its log: at once)."""
    replay_attempts: int = Field(default=3, ge=1, le=20)
    """Replays of one turn before it is given up (logged and counted in
    `cbd_ingest_turns_replay_abandoned_total`)."""

    @model_validator(mode="after")
    def _keys_in_production(self) -> Self:
        if self.environment == "production":
            if not self.require_keys:
                raise ValueError("CBD_INGEST_REQUIRE_KEYS must be true in production")
            if any(v.get_secret_value() == DEV_API_KEY for v in self.api_keys.values()):
                raise ValueError("set CBD_INGEST_API_KEYS in production")
            if DEV_WIDGET_KEY in self.widget_keys:
                raise ValueError("set CBD_INGEST_WIDGET_KEYS in production")
            if any(
                v.get_secret_value() == DEV_IDENTITY_SECRET for v in self.identity_secrets.values()
            ):
                raise ValueError("set CBD_INGEST_IDENTITY_SECRETS in production")
            for tenant, key in self.api_keys.items():
                require_secret(f"CBD_INGEST_API_KEYS[{tenant}]", key.get_secret_value())
            for tenant, secret in self.identity_secrets.items():
                require_secret(f"CBD_INGEST_IDENTITY_SECRETS[{tenant}]", secret.get_secret_value())
            for name, widget in self.widget_keys.items():
                require_explicit_origins(f"CBD_INGEST_WIDGET_KEYS[{name}]", widget.origins)
        return self
