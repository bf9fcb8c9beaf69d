"""Agent sign-in: named agents with passwords from settings, and signed bearer tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class AgentToken:
    """A verified token's content."""

    agent_id: str
    expires_at: float


class AgentAuth:
    """Checks agent passwords and issues and verifies HMAC-signed tokens."""

    def __init__(self, agents: dict[str, str], secret: str, ttl_s: int = 12 * 3600) -> None:
        self.agents = agents
        self.secret = secret.encode()
        self.ttl_s = ttl_s

    def login(self, agent_id: str, password: str) -> str | None:
        """A token for the agent, or None when the credentials are wrong."""
        expected = self.agents.get(agent_id)
        # Compare even for unknown agents, so timing does not reveal which agents exist.
        ok = hmac.compare_digest((expected or "\x00").encode(), password.encode())
        if expected is None or not ok:
            return None
        return self.issue(agent_id)

    def issue(self, agent_id: str, now: float | None = None) -> str:
        """A token for `agent_id`, valid for the configured time."""
        expires = int((now if now is not None else time.time()) + self.ttl_s)
        body = f"{agent_id}|{expires}".encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + self._sign(body)

    def verify(self, token: str, now: float | None = None) -> AgentToken | None:
        """The token's agent if it is authentic and unexpired, else None."""
        try:
            encoded, signature = token.split(".", 1)
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            agent_id, expires = body.decode().rsplit("|", 1)
            expires_at = float(expires)
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        if expires_at < (now if now is not None else time.time()):
            return None
        if agent_id not in self.agents:
            return None
        return AgentToken(agent_id, expires_at)

    def _sign(self, body: bytes) -> str:
        digest = hmac.new(self.secret, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
