"""Security at the edge: tenant keys, signed identities, rate limits, replay protection.

Every refusal is a clear 4xx and is counted in `cbd_ingest_rejections_total` by reason.
Comparisons of secrets are constant-time. Rate limits and the replay memory live in Redis so
that they hold across replicas; if Redis is down the edge fails open on rate limits (refusing
every customer would be worse) but never skips a signature check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter
from starlette.requests import Request

from services.ingest.settings import IngestSettings
from shared.http import ApiError

log = logging.getLogger(__name__)

REJECTIONS = Counter(
    "cbd_ingest_rejections_total",
    "Requests the edge refused, by channel and reason.",
    ["channel", "reason"],
)


class Refused(ApiError):
    """A request refused at the edge, with its status and the words to say why."""

    def __init__(
        self, status: int, error: str, message: str, *, retry_after: int | None = None
    ) -> None:
        headers = {"retry-after": str(retry_after)} if retry_after else None
        super().__init__(status, error, message, headers=headers)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Caller:
    """Who is calling: the tenant, and whether the customer's identity was proven."""

    tenant: str
    verified_customer: bool = False


MAX_JSON_DEPTH = 8
"""Deepest nesting of arrays and objects a request or frame may have (ours need 3)."""


def json_depth_exceeds(raw: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when `raw` nests arrays/objects deeper than `limit`, found in one linear pass.

    Checked before parsing, so a body of ten thousand `[` costs a scan, not a parser's
    recursion (Python's json raises RecursionError near 1,000 levels).
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


async def read_body(request: Request, limit: int, *, channel: str) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        REJECTIONS.labels(channel, "too_large").inc()
        raise Refused(413, "too_large", f"body exceeds {limit} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            REJECTIONS.labels(channel, "too_large").inc()
            raise Refused(413, "too_large", f"body exceeds {limit} bytes")
    return raw


def constant_time_equal(a: str, b: str) -> bool:
    """Compare secrets without leaking where they differ."""
    return hmac.compare_digest(a.encode(), b.encode())


def customer_hash(secret: str, customer_id: str) -> str:
    """The HMAC-SHA256 a tenant's server gives its page to prove who the visitor is."""
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's X-Twilio-Signature: HMAC-SHA1 of the URL plus sorted POST params, base64."""
    payload = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def meta_signature(app_secret: str, body: bytes) -> str:
    """Meta's X-Hub-Signature-256: `sha256=` and the HMAC-SHA256 of the raw body in hex."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


class EdgeGuard:
    """Checks keys, signatures and rates."""

    def __init__(self, settings: IngestSettings, redis: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis
        """Rate limits and replay memory; without it (unit tests of the checks) they are off."""
        self._api_keys = {v.get_secret_value(): k for k, v in settings.api_keys.items()}

    def _refuse(self, channel: str, status: int, error: str, message: str) -> Refused:
        REJECTIONS.labels(channel, error).inc()
        return Refused(status, error, message)

    def api_key(self, presented: str | None, channel: str = "api") -> Caller:
        """The tenant of a server-to-server key (X-API-Key or `Authorization: Bearer`)."""
        if not presented:
            if self.settings.require_keys:
                raise self._refuse(channel, 401, "missing_api_key", "send your X-API-Key")
            return Caller(tenant="default")
        for key, tenant in self._api_keys.items():
            if constant_time_equal(presented, key):
                return Caller(tenant=tenant, verified_customer=True)
        raise self._refuse(channel, 401, "invalid_api_key", "the API key is not valid")

    def widget(
        self,
        key: str | None,
        origin: str | None,
        customer_id: str,
        presented_hash: str | None,
    ) -> Caller:
        """A widget connection: a publishable key valid for this page's origin.

        A customer id is trusted as the tenant's signed-in user only with a valid
        `customer_hash`; otherwise it must be an anonymous `web-` visitor id, so nobody can
        open a chat as somebody else and read what the platform remembers about them.
        """
        if not key:
            if self.settings.require_keys:
                raise self._refuse("web", 401, "missing_widget_key", "the widget needs its key")
            return Caller(tenant="default")
        widget = next(
            (w for k, w in self.settings.widget_keys.items() if constant_time_equal(key, k)),
            None,
        )
        if widget is None:
            raise self._refuse("web", 401, "invalid_widget_key", "the widget key is not valid")
        if "*" not in widget.origins and (origin or "") not in widget.origins:
            raise self._refuse(
                "web", 403, "origin_not_allowed", "this site may not use this widget key"
            )
        if presented_hash:
            secret = self.settings.identity_secrets.get(widget.tenant)
            expected = customer_hash(secret.get_secret_value(), customer_id) if secret else ""
            if not expected or not constant_time_equal(presented_hash, expected):
                raise self._refuse(
                    "web", 403, "invalid_customer_hash", "the customer_hash does not match"
                )
            return Caller(tenant=widget.tenant, verified_customer=True)
        if self.settings.require_keys and not customer_id.startswith("web-"):
            raise self._refuse(
                "web",
                403,
                "unverified_customer",
                "a named customer needs a customer_hash; anonymous visitors use web- ids",
            )
        return Caller(tenant=widget.tenant)

    def twilio(self, url: str, params: Mapping[str, str], signature: str | None) -> None:
        """Refuse a Twilio webhook whose X-Twilio-Signature is missing or wrong."""
        token = self.settings.twilio_auth_token.get_secret_value()
        channel = "twilio"
        if not token:
            raise self._refuse(channel, 403, "not_configured", "Twilio is not configured")
        if not signature:
            raise self._refuse(channel, 403, "missing_signature", "X-Twilio-Signature missing")
        if not constant_time_equal(signature, twilio_signature(token, url, params)):
            raise self._refuse(channel, 403, "bad_signature", "X-Twilio-Signature is not valid")

    def meta(self, body: bytes, signature: str | None) -> None:
        """Refuse a WhatsApp Cloud API webhook whose X-Hub-Signature-256 is missing or wrong."""
        secret = self.settings.whatsapp_app_secret.get_secret_value()
        channel = "whatsapp"
        if not secret:
            raise self._refuse(channel, 403, "not_configured", "WhatsApp is not configured")
        if not signature:
            raise self._refuse(channel, 403, "missing_signature", "X-Hub-Signature-256 missing")
        if not constant_time_equal(signature, meta_signature(secret, body)):
            raise self._refuse(channel, 403, "bad_signature", "X-Hub-Signature-256 is not valid")

    async def first_delivery(self, provider: str, message_id: str) -> bool:
        """True the first time a provider's message id is seen; its redeliveries get False.

        Providers retry a webhook they think failed, and a captured request can be replayed:
        both carry an id already seen, and nothing is published twice.
        """
        if self.redis is None:
            return True
        key = f"{self.settings.redis.key_prefix}seen:{provider}:{message_id}"
        try:
            fresh = await self.redis.set(key, "1", nx=True, ex=self.settings.provider_dedupe_ttl_s)
        except Exception:
            log.warning("replay memory unavailable; accepting %s", message_id, exc_info=True)
            return True
        if not fresh:
            REJECTIONS.labels(provider, "duplicate").inc()
        return bool(fresh)

    async def forget_delivery(self, provider: str, message_id: str) -> None:
        """Forget a message id whose handling failed, so the provider's retry is taken."""
        if self.redis is None:
            return
        try:
            await self.redis.delete(f"{self.settings.redis.key_prefix}seen:{provider}:{message_id}")
        except Exception:
            log.warning("could not forget %s; its retry will be dropped", message_id, exc_info=True)

    async def rate_limit(
        self, channel: str, tenant: str, customer_id: str | None, ip: str | None = None
    ) -> None:
        """Fixed one-minute windows per customer, tenant and client address, on all replicas.

        Counters are keyed by what the edge verified: the tenant of the key, the customer id
        the key vouches for (or a provider's signed number), and the address the connection
        came from, so inventing new customer ids does not escape the address's limit.
        """
        if self.redis is None:
            return
        window = int(time.time() // 60)
        prefix = f"{self.settings.redis.key_prefix}rate:{window}:"
        limits: list[tuple[str, int, str]] = [
            (f"{prefix}t:{tenant}", self.settings.tenant_rate_per_min, "tenant"),
        ]
        if customer_id is not None:
            limits.append(
                (
                    f"{prefix}c:{tenant}:{customer_id}",
                    self.settings.customer_rate_per_min,
                    "customer",
                )
            )
        if ip is not None:
            limits.append((f"{prefix}ip:{ip}", self.settings.ip_rate_per_min, "address"))
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, _, _ in limits:
                    pipe.incr(key)
                    pipe.expire(key, 120)
                counts = await pipe.execute()
        except Exception:
            log.warning("rate limits unavailable (Redis); allowing", exc_info=True)
            return
        for (_, limit, scope), count in zip(limits, counts[::2], strict=True):
            if int(count) > limit:
                REJECTIONS.labels(channel, f"rate_limited_{scope}").inc()
                raise Refused(
                    429,
                    "rate_limited",
                    f"too many requests from this {scope}; slow down",
                    retry_after=60 - int(time.time()) % 60,
                )


class ConnectionBudget:
    """Frames one WebSocket may send per minute, counted in the process that holds it.

    Every frame counts, valid or not, so a socket flooding malformed frames (which never
    reach the per-customer limit) is slowed down and then closed.
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.window = -1
        self.count = 0

    def spend(self) -> int:
        """Count a frame; return how far over the budget this minute is (0: within it)."""
        window = int(time.monotonic() // 60)
        if window != self.window:
            self.window, self.count = window, 0
        self.count += 1
        return max(0, self.count - self.per_minute)
