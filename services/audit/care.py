"""Wires the care loop into the audit service: subscribers, the sweeper and the review desk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack

from services.audit.care_settings import CareSettings
from services.audit.followup import FollowUps
from services.audit.outcomes import Outcomes
from services.audit.reviewers import ReviewerAuth
from services.audit.reviews import ReviewDesk
from shared.events import (
    ConversationClosedEvent,
    CustomerErasedEvent,
    FeedbackReceivedEvent,
    ReplyGeneratedEvent,
    TurnRoutedEvent,
    utcnow,
)
from shared.service import Infra
from shared.topics import Topic

log = logging.getLogger(__name__)


def reviewer_auth(settings: CareSettings) -> ReviewerAuth:
    """Reviewer sign-in from the care settings."""
    return ReviewerAuth(
        {k: v.get_secret_value() for k, v in settings.reviewers.items()},
        settings.reviewer_token_secret.get_secret_value(),
        settings.reviewer_token_ttl_s,
        tenants=settings.tenants_by_reviewer(),
    )


async def wire(infra: Infra, stack: AsyncExitStack, settings: CareSettings) -> None:
    """Subscribe the care loop's handlers, start its sweeper and hand the review routes their
    sign-in and desk (`services.audit.review_api`)."""
    pg = infra.require_pg()
    outcomes = Outcomes(pg, infra.bus, settings)
    infra.subscribe(Topic.TURN_ROUTED, TurnRoutedEvent, outcomes.on_turn_routed)
    infra.subscribe(Topic.REPLY_GENERATED, ReplyGeneratedEvent, outcomes.on_reply_generated)
    infra.subscribe(Topic.FEEDBACK_RECEIVED, FeedbackReceivedEvent, outcomes.on_feedback_received)
    infra.subscribe(
        Topic.CONVERSATION_CLOSED, ConversationClosedEvent, outcomes.on_conversation_closed
    )
    infra.subscribe(Topic.CUSTOMER_ERASED, CustomerErasedEvent, outcomes.on_customer_erased)
    infra.provide(reviewer_auth(settings))
    infra.provide(ReviewDesk(pg, infra.bus))
    followups = FollowUps(pg, infra.bus, settings)

    async def sweeper() -> None:
        # The broker starts after wiring; the first pass waits one interval.
        while True:
            await asyncio.sleep(settings.sweep_interval_s)
            try:
                await outcomes.sweep(utcnow())
                # Memory's tables may not exist yet while the platform starts.
                if await pg.fetchval("SELECT to_regclass('memory.issues') IS NOT NULL"):
                    await followups.run(utcnow())
            except Exception:
                log.exception("care sweep failed; next pass in %.0fs", settings.sweep_interval_s)

    task = asyncio.create_task(sweeper(), name="care-sweeper")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
