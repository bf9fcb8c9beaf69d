"""Passwords of the people who sign in (agents, reviewers): argon2id hashes, never plain text.

Checked with argon2id (`argon2-cffi`, the reference implementation's binding, maintained by
the PyCA community). Production settings carry only PHC hashes (`$argon2id$...`, made with
`cbd agents hash-password`); a development password in plain text is hashed at start-up with
a cheap profile so tests and `make run` sign in quickly. An unknown id is checked against a
decoy hash, so timing does not tell who exists.
"""

from __future__ import annotations

from collections.abc import Mapping

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PRODUCTION_HASHER = PasswordHasher()
"""argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile: 64 MiB, t=3, p=4)."""
DEV_HASHER = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
"""For plain-text development passwords only, so tests and `make run` sign in quickly."""


def is_password_hash(value: str) -> bool:
    """Whether a configured credential is an argon2 PHC string rather than a password."""
    return value.startswith("$argon2")


def valid_password_hash(value: str) -> bool:
    """Whether a configured credential is a well-formed argon2 PHC hash."""
    if not is_password_hash(value):
        return False
    try:
        extract_parameters(value)
    except InvalidHashError:
        return False
    return True


def hash_password(password: str) -> str:
    """An argon2id PHC hash of `password`, for the agents' and reviewers' settings."""
    return PRODUCTION_HASHER.hash(password)


def hash_problems(setting: str, credentials: Mapping[str, str]) -> list[str]:
    """Why each configured credential cannot be used in production (it is not a hash)."""
    return [
        f"{setting}[{who}] must be an argon2 hash (make one with `cbd agents "
        "hash-password`), never a password"
        for who, value in credentials.items()
        if not valid_password_hash(value)
    ]


class PasswordBook:
    """Who may sign in, by id, with the argon2 hash of their password."""

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self.hashes = {
            who: value if is_password_hash(value) else DEV_HASHER.hash(value)
            for who, value in credentials.items()
        }
        self._decoy = DEV_HASHER.hash("decoy-password")

    def __contains__(self, who: object) -> bool:
        return who in self.hashes

    def check(self, who: str, password: str) -> bool:
        """Whether `password` is `who`'s (CPU-bound: argon2; call it off the event loop)."""
        stored = self.hashes.get(who)
        try:
            hasher = PRODUCTION_HASHER if stored is not None else DEV_HASHER
            hasher.verify(stored or self._decoy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return stored is not None
