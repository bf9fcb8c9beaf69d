"""The closing question on SMS and WhatsApp: asked once when a conversation closes, and the
customer's next text read as its answer when it is one.

When `conversation.closed` arrives for a messaging conversation, its customer gets one short
question ("How did we do? Reply 1-5") through the provider, and their number is remembered as
awaiting an answer (`survey:<channel>:<digits>`, for `survey_reply_window_s`). Their next text
is parsed with `shared.survey.parse_survey_answer`: a clear score ("4", "five", "4/5", "5 stars -
quick and kind") becomes `feedback.received` for the closed conversation (CSAT 1-5, the
words beside the score as the comment) and is never a turn; anything else ("my parcel still
hasn't come") is an ordinary message, and the question is dropped so a number sent later is
not mistaken for a rating.

Once only: the question's provider message is claimed by the conversation (a redelivered close
texts nobody twice), and every answer to one question is the same rating claim, so a second
"5" is a duplicate, not a second rating.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter

from services.ingest.channels.identity import Address, Conversations, phone_identity
from services.ingest.channels.outbound import MessagingOutbound
from services.ingest.intake import Intake
from services.ingest.ownership import Party
from services.ingest.settings import IngestSettings
from shared.events import Channel, ConversationClosedEvent
from shared.http import ApiError
from shared.survey import parse_survey_answer

log = logging.getLogger(__name__)

SURVEYS = Counter(
    "cbd_ingest_messaging_surveys_total",
    "Closing questions on SMS and WhatsApp, by channel and outcome (asked, answered, "
    "not_an_answer, no_address).",
    ["channel", "outcome"],
)

MESSAGING = frozenset({Channel.SMS, Channel.WHATSAPP})

PENDING_TEMPLATE = "survey:{channel}:{digits}"
"""A number awaiting its answer (after the Redis key prefix); erasure deletes it."""

ASKED_TEMPLATE = "survey-asked:{conversation}"
"""A conversation whose closing question was asked (after the Redis key prefix)."""


@dataclass(frozen=True)
class Answered:
    """A text that answered the closing question."""

    conversation_id: str
    event_id: str
    rating: int
    duplicate: bool


class MessagingSurvey:
    """Asks the closing question and reads the answer, for SMS and WhatsApp."""

    def __init__(
        self,
        settings: IngestSettings,
        redis: aioredis.Redis,
        conversations: Conversations,
        outbound: MessagingOutbound,
        intake: Intake,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.conversations = conversations
        self.outbound = outbound
        self.intake = intake
        self.prefix = settings.redis.key_prefix

    def _pending_key(self, channel: Channel, identity: str) -> str:
        digits = identity.removeprefix("phone:")
        return self.prefix + PENDING_TEMPLATE.format(channel=channel.value, digits=digits)

    async def ask(self, event: ConversationClosedEvent) -> bool:
        """Text the closing question for a closed messaging conversation; True if asked.

        A provider failure raises, so the close is retried (the question is claimed per piece,
        so a retry sends only what did not go out).
        """
        if not self.settings.survey_enabled or event.channel not in MESSAGING:
            return False
        address = await self.conversations.address(event.conversation_id)
        identity = phone_identity(address.to) if address is not None else None
        if address is None or identity is None:
            # The number is forgotten (erased, or the close came long after): nobody to ask.
            SURVEYS.labels(event.channel.value, "no_address").inc()
            return False
        # Once per conversation: a redelivered close must not reopen an answered question.
        first = await self.redis.set(
            self.prefix + ASKED_TEMPLATE.format(conversation=event.conversation_id),
            "1",
            nx=True,
            ex=self.settings.survey_reply_window_s,
        )
        if first:
            # Remembered before sending: an answer racing the question's delivery still counts.
            await self.redis.set(
                self._pending_key(event.channel, identity),
                json.dumps({"conversation_id": event.conversation_id}),
                ex=self.settings.survey_reply_window_s,
            )
        sent = await self.outbound.send(
            address, f"survey:{event.conversation_id}", self.settings.survey_question
        )
        if sent:
            SURVEYS.labels(event.channel.value, "asked").inc()
        return True

    async def answer(
        self, channel: Channel, identity: str, address: Address, text: str, message_id: str
    ) -> Answered | None:
        """The customer's text as the answer to a pending question, or None (a message).

        A text that is not clearly one score drops the question. A rating the broker refused
        raises (503), and the question stays pending for the provider's retry.
        """
        key = self._pending_key(channel, identity)
        raw = await self.redis.get(key)
        if raw is None:
            return None
        conversation_id = str(json.loads(raw)["conversation_id"])
        parsed = parse_survey_answer(text, "csat")
        if parsed is None or parsed.csat is None:
            await self.redis.delete(key)
            SURVEYS.labels(channel.value, "not_an_answer").inc()
            return None
        party = Party(self.settings.messaging_tenant, identity)
        try:
            rated = await self.intake.rate(
                conversation_id,
                party,
                channel,
                parsed.csat,
                parsed.comment,
                # One claim per question: a second answer is the first one again.
                client_message_id=f"survey-{conversation_id}",
                nps=parsed.nps,
            )
        except ApiError as err:
            if err.status == 404:
                # The conversation is no longer this number's (erased): not a rating.
                await self.redis.delete(key)
                return None
            raise
        await self.redis.delete(key)
        SURVEYS.labels(channel.value, "answered").inc()
        if not rated.duplicate and self.settings.survey_thanks:
            try:
                await self.outbound.send(
                    address, f"survey-thanks:{conversation_id}", self.settings.survey_thanks
                )
            except Exception:
                # The rating is recorded; a lost thank-you is not worth a provider retry.
                log.warning("could not thank %s for the rating", channel.value, exc_info=True)
        return Answered(conversation_id, rated.event_id, parsed.csat, rated.duplicate)
