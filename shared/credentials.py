"""Secrets in production: strong enough, never a development value, compared in constant time.

Every development default that works without configuration is listed here once, so that a
production setting can be refused for holding *any* of them, not just its own service's.
A production secret must be at least 32 bytes with the variety of random bytes (generate one
with `python -c "import secrets; print(secrets.token_urlsafe(32))"`); a repeated word or a
dev value is refused when settings load, so the service never starts with it.
"""

from __future__ import annotations

import hmac
import math
from collections import Counter
from urllib.parse import urlsplit

DEV_SECRET_VALUES = frozenset(
    {
        "dev-api-key",
        "dev-widget-key",
        "dev-identity-secret",
        "dev-admin-token",
        "dev-only-agent-token-secret",
        "dev-only-audit-chain-key",
        "agent",
    }
)
"""Every secret-like default shipped for development (tested against the services' settings)."""

MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 128
"""What the characters of a production secret must carry at least, estimated from their mix
(a random 32-byte token in base64 or hex carries about 200 or 250 by this estimate)."""


def secret_problem(value: str) -> str | None:
    """Why `value` cannot be a production secret, or None when it can."""
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"shorter than {MIN_SECRET_BYTES} bytes"
    lowered = value.lower()
    if any(dev in lowered for dev in DEV_SECRET_VALUES if len(dev) >= 8):
        return "contains a development default"
    counts = Counter(value)
    bits = -sum(n * math.log2(n / len(value)) for n in counts.values())
    if bits < MIN_SECRET_BITS:
        return f"too repetitive to be random (about {bits:.0f} bits, needs {MIN_SECRET_BITS})"
    return None


def require_secret(name: str, value: str) -> None:
    """Raise ValueError naming the setting when `value` is not a usable production secret."""
    if problem := secret_problem(value):
        raise ValueError(
            f"{name} {problem}; use at least {MIN_SECRET_BYTES} random bytes, e.g. "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'
        )


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <expected>`, in constant time.

    An empty expected token never matches, so `Authorization: Bearer` alone cannot pass a
    check whose secret was left empty; the scheme is case-insensitive as RFC 9110 says.
    """
    if not expected or not authorization:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def require_explicit_origins(name: str, origins: list[str]) -> None:
    """Raise ValueError unless every origin is an explicit `https://host[:port]` (no `*`)."""
    if not origins:
        raise ValueError(f"{name}: list the origins (https://host[:port]) allowed to embed it")
    for origin in origins:
        parts = urlsplit(origin)
        explicit = (
            parts.scheme == "https"
            and bool(parts.hostname)
            and "*" not in origin
            and parts.path in {"", "/"}
            and not (parts.query or parts.fragment or parts.username)
        )
        if not explicit:
            raise ValueError(f"{name}: {origin!r} is not an explicit https origin")
