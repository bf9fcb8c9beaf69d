"""Reviewer sign-in: named reviewers with argon2-hashed passwords, and signed bearer tokens.

The same scheme as the agents' console (argon2id password hashes from `shared/passwords.py`,
HMAC-SHA256 tokens over `id|expiry`), with its own key and its own list of people: a reviewer
is not an agent, and an agent's token opens no review. Production settings carry only hashes
(`cbd agents hash-password` makes one); a plain development password is hashed at start-up.
Each reviewer works for its tenants (settings: `reviewer_tenants`, `default` when not listed)
and sees and scores only those tenants' replies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.events import DEFAULT_TENANT
from shared.passwords import PasswordBook


@dataclass(frozen=True)
class ReviewerToken:
    """A verified token's content."""

    reviewer_id: str
    expires_at: float
    tenants: tuple[str, ...] = (DEFAULT_TENANT,)
    """The tenants whose replies the reviewer may see and score."""


class ReviewerAuth:
    """Checks reviewer passwords and issues and verifies HMAC-signed tokens."""

    def __init__(
        self,
        reviewers: dict[str, str],
        secret: str,
        ttl_s: int = 12 * 3600,
        *,
        tenants: Mapping[str, str | Sequence[str]] | None = None,
    ) -> None:
        self.reviewers = PasswordBook(reviewers)
        self._tenants = {
            reviewer: (t,) if isinstance(t, str) else tuple(sorted(set(t)))
            for reviewer, t in (tenants or {}).items()
        }
        self.secret = secret.encode()
        self.ttl_s = ttl_s

    def tenants_of(self, reviewer_id: str) -> tuple[str, ...]:
        """The tenants the reviewer works for (`default` when the settings name none)."""
        return self._tenants.get(reviewer_id, (DEFAULT_TENANT,))

    def login(self, reviewer_id: str, password: str) -> str | None:
        """A token for the reviewer, or None when the credentials are wrong (CPU-bound:
        argon2, so callers run it off the event loop). Unknown ids are checked against a decoy
        hash, so timing does not reveal which reviewers exist."""
        if not self.reviewers.check(reviewer_id, password):
            return None
        return self.issue(reviewer_id)

    def issue(self, reviewer_id: str, now: float | None = None) -> str:
        """A token for `reviewer_id`, valid for the configured time."""
        expires = int((now if now is not None else time.time()) + self.ttl_s)
        body = f"review|{reviewer_id}|{expires}".encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + self._sign(body)

    def verify(self, token: str, now: float | None = None) -> ReviewerToken | None:
        """The token's reviewer if it is authentic, unexpired and still listed, else None."""
        try:
            encoded, signature = token.split(".", 1)
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            role, reviewer_id, expires = body.decode().split("|")
            expires_at = float(expires)
        except (ValueError, UnicodeDecodeError):
            return None
        if role != "review" or not hmac.compare_digest(self._sign(body), signature):
            return None
        if expires_at < (now if now is not None else time.time()):
            return None
        if reviewer_id not in self.reviewers:
            return None
        return ReviewerToken(reviewer_id, expires_at, self.tenants_of(reviewer_id))

    def _sign(self, body: bytes) -> str:
        digest = hmac.new(self.secret, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
