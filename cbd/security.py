"""`cbd agents ...` and `cbd audit ...`: the security chores an operator runs by hand."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from services.audit.ledger import Ledger
from services.audit.settings import AuditSettings
from shared import db
from shared.passwords import hash_password


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `agents hash-password` and `audit verify` on the `cbd` parser."""
    p_agents = sub.add_parser("agents", help="agent credentials for the console")
    agents_sub = p_agents.add_subparsers(dest="action", required=True)
    agents_sub.add_parser(
        "hash-password",
        help="read a password (stdin or prompt), print its argon2id hash for CBD_ESCALATION_AGENTS",
    )
    p_audit = sub.add_parser("audit", help="the audit ledger")
    audit_sub = p_audit.add_subparsers(dest="action", required=True)
    audit_sub.add_parser(
        "verify",
        help="recompute the keyed hash chain (CBD_PG_DSN, CBD_AUDIT_CHAIN_KEY) and report "
        "the first broken link",
    )


def dispatch(args: argparse.Namespace) -> int | None:
    """Run a command registered here; None when `args` is not one of them."""
    if args.command == "agents":
        return hash_password_command()
    if args.command == "audit":
        return asyncio.run(audit_verify_command())
    return None


def hash_password_command() -> int:
    """Print the argon2id hash of a password read from stdin (piped) or a prompt."""
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
    if not password:
        print("no password given", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


async def audit_verify_command() -> int:
    """Verify the audit chain; exit 0 when intact, 1 at the first broken link."""
    settings = AuditSettings()
    pool = await db.create_pool(settings.postgres)
    try:
        result = await Ledger(pool, settings.chain_key.get_secret_value()).check()
    finally:
        await pool.close()
    print(result.describe())
    return 0 if result.intact else 1
