"""Agent sign-in: argon2-hashed passwords, throttled logins, signed and revocable bearer tokens.

- Passwords are checked with argon2id (`shared/passwords.py`, shared with the reviewers'
  sign-in), never compared in plain text. Production settings carry only PHC hashes
  (`$argon2id$...`, made with `cbd agents hash-password`); a development password in plain
  text is hashed at start-up with a cheap profile.
- Each agent has a token version in PostgreSQL (`escalation.agent_credentials`). When an agent's
  configured credential changes, start-up bumps the version, so every token issued under the
  old password stops working at once, on every replica. A revocation on one replica reaches
  the others through `watching_versions`: each replica reads the versions again every few
  seconds (one indexed query), so a revoked token stops working everywhere within that period
  without a restart, and `verify` stays a pure in-memory check on the request path.
- Each agent works for its tenants (settings: `agent_tenants`, `default` when not listed);
  the verified token carries them, and every route filters tickets and console frames on
  them. Moving an agent to other tenants changes its fingerprint, so its old tokens stop
  working.
- Failed sign-ins are counted in Redis per account and per client address (fixed windows);
  over either limit, sign-in answers 429 with Retry-After until the window ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.events import DEFAULT_TENANT
from shared.passwords import PasswordBook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentToken:
    """A verified token's content."""

    agent_id: str
    expires_at: float
    version: int = 0
    tenants: tuple[str, ...] = (DEFAULT_TENANT,)
    """The tenants the agent works for: the only ones whose tickets it may see or touch."""


class AgentAuth:
    """Checks agent passwords and issues and verifies HMAC-signed, versioned tokens."""

    def __init__(
        self,
        agents: dict[str, str],
        secret: str,
        ttl_s: int = 12 * 3600,
        *,
        tenants: Mapping[str, str | Sequence[str]] | None = None,
    ) -> None:
        self._configured = dict(agents)
        self._tenants = {
            agent: (t,) if isinstance(t, str) else tuple(sorted(set(t)))
            for agent, t in (tenants or {}).items()
        }
        self._book = PasswordBook(agents)
        self.agents = self._book.hashes
        self.secret = secret.encode()
        self.ttl_s = ttl_s
        self.versions: dict[str, int] = dict.fromkeys(agents, 0)

    def tenants_of(self, agent_id: str) -> tuple[str, ...]:
        """The tenants the agent works for (`default` when the settings name none)."""
        return self._tenants.get(agent_id, (DEFAULT_TENANT,))

    def login(self, agent_id: str, password: str) -> str | None:
        """A token for the agent, or None when the credentials are wrong (CPU-bound: argon2)."""
        if not self._book.check(agent_id, password):
            return None
        return self.issue(agent_id)

    def issue(self, agent_id: str, now: float | None = None) -> str:
        """A token for `agent_id` at its current version, valid for the configured time."""
        expires = int((now if now is not None else time.time()) + self.ttl_s)
        body = f"{agent_id}|{self.versions.get(agent_id, 0)}|{expires}".encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + self._sign(body)

    def verify(self, token: str, now: float | None = None) -> AgentToken | None:
        """The token's agent if it is authentic, unexpired and of the agent's current version."""
        try:
            encoded, signature = token.split(".", 1)
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            agent_id, version, expires = body.decode().rsplit("|", 2)
            expires_at, token_version = float(expires), int(version)
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        if expires_at < (now if now is not None else time.time()):
            return None
        if agent_id not in self.agents or token_version != self.versions.get(agent_id):
            return None
        return AgentToken(agent_id, expires_at, token_version, self.tenants_of(agent_id))

    def fingerprint(self, agent_id: str) -> str:
        """A keyed digest of the agent's configured credential and tenant: changes when
        either changes."""
        value = self._configured[agent_id].encode()
        tenants = self.tenants_of(agent_id)
        if tenants != (DEFAULT_TENANT,):
            # Only named tenants count, so single-tenant fingerprints stay what they were.
            value += b"\x00tenants:" + ",".join(tenants).encode()
        return hmac.new(self.secret, value, hashlib.sha256).hexdigest()

    async def sync_versions(self, pg: Any) -> None:
        """Record each agent's credential fingerprint; a changed one bumps the agent's token
        version (revoking its tokens). Every replica then reads the same versions."""
        async with pg.acquire() as conn, conn.transaction():
            for agent_id in self.agents:
                version = await conn.fetchval(
                    """
                    INSERT INTO escalation.agent_credentials (agent_id, fingerprint)
                    VALUES ($1, $2)
                    ON CONFLICT (agent_id) DO UPDATE SET
                        token_version = escalation.agent_credentials.token_version
                            + (escalation.agent_credentials.fingerprint
                               IS DISTINCT FROM EXCLUDED.fingerprint)::int,
                        fingerprint = EXCLUDED.fingerprint,
                        changed_at = CASE
                            WHEN escalation.agent_credentials.fingerprint
                                 IS DISTINCT FROM EXCLUDED.fingerprint
                            THEN now() ELSE escalation.agent_credentials.changed_at END
                    RETURNING token_version
                    """,
                    agent_id,
                    self.fingerprint(agent_id),
                )
                self.versions[agent_id] = int(version)

    async def revoke(self, pg: Any, agent_id: str) -> int:
        """Invalidate every token of an agent (sign out everywhere); the new version."""
        version = await pg.fetchval(
            "UPDATE escalation.agent_credentials SET token_version = token_version + 1, "
            "changed_at = now() WHERE agent_id = $1 RETURNING token_version",
            agent_id,
        )
        if version is None:
            raise KeyError(agent_id)
        self.versions[agent_id] = int(version)
        return int(version)

    async def refresh_versions(self, pg: Any) -> None:
        """Read every agent's current token version (revocations made by other replicas).

        An agent missing from the table keeps its version; the table only ever counts up, so a
        refresh never brings a revoked token back.
        """
        rows = await pg.fetch(
            "SELECT agent_id, token_version FROM escalation.agent_credentials "
            "WHERE agent_id = ANY($1::text[])",
            list(self.agents),
        )
        for row in rows:
            agent_id, version = row["agent_id"], int(row["token_version"])
            self.versions[agent_id] = max(version, self.versions.get(agent_id, 0))

    @contextlib.asynccontextmanager
    async def watching_versions(self, pg: Any, interval_s: float) -> AsyncIterator[None]:
        """Refresh the versions every `interval_s` while the context is open (the lifespan)."""

        async def watch() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await self.refresh_versions(pg)
                except Exception:  # a database blip must not end the watch
                    log.warning("could not refresh agent token versions", exc_info=True)

        task = asyncio.create_task(watch(), name="agent-token-versions")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _sign(self, body: bytes) -> str:
        digest = hmac.new(self.secret, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class LoginThrottle:
    """Failed sign-ins per account and per client address, in fixed windows in Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key_prefix: str,
        *,
        per_account: int = 5,
        per_address: int = 20,
        window_s: int = 900,
    ) -> None:
        self.redis = redis
        self.prefix = f"{key_prefix}login:"
        self.per_account = per_account
        self.per_address = per_address
        self.window_s = window_s

    def _keys(self, agent_id: str, address: str) -> tuple[str, str]:
        account = hashlib.sha256(agent_id.encode()).hexdigest()[:32]
        return f"{self.prefix}account:{account}", f"{self.prefix}address:{address}"

    async def retry_after(self, agent_id: str, address: str) -> int | None:
        """Seconds until this account or address may try again, or None when it may now.

        Raises RedisError when the counts cannot be read: sign-in then fails closed.
        """
        account_key, address_key = self._keys(agent_id, address)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(account_key)
            pipe.get(address_key)
            pipe.ttl(account_key)
            pipe.ttl(address_key)
            account, address_count, account_ttl, address_ttl = await pipe.execute()
        waits = []
        if account is not None and int(account) >= self.per_account:
            waits.append(max(int(account_ttl), 1))
        if address_count is not None and int(address_count) >= self.per_address:
            waits.append(max(int(address_ttl), 1))
        return max(waits) if waits else None

    async def failed(self, agent_id: str, address: str) -> None:
        """Count a failed sign-in against the account and the address."""
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for key in self._keys(agent_id, address):
                    # The window starts at the first failure (SET NX EX works on Redis 6 too).
                    pipe.set(key, 0, ex=self.window_s, nx=True)
                    pipe.incr(key)
                await pipe.execute()
        except RedisError:
            log.warning("could not count a failed agent sign-in", exc_info=True)

    async def succeeded(self, agent_id: str, address: str) -> None:
        """A correct password clears the account's count (not the address's)."""
        try:
            await self.redis.delete(self._keys(agent_id, address)[0])
        except RedisError:
            log.warning("could not clear an agent's failed sign-ins", exc_info=True)
