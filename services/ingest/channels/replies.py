"""Replies on their way back to messaging and voice customers, and what erasure clears here."""

from __future__ import annotations

from services.ingest.channels.identity import Conversations
from services.ingest.channels.outbound import MessagingOutbound, template_named
from services.ingest.channels.survey import ASKED_TEMPLATE
from services.ingest.channels.voice import VoiceReplies
from shared.erasure import conversation_keys, delete_keys
from shared.events import Channel, CustomerErasedEvent, ReplyGeneratedEvent


class ChannelReplies:
    """Sends SMS/WhatsApp replies through the provider; hands voice replies to the call."""

    def __init__(
        self,
        conversations: Conversations,
        outbound: MessagingOutbound,
        voice: VoiceReplies,
    ) -> None:
        self.conversations = conversations
        self.outbound = outbound
        self.voice = voice

    async def deliver(self, event: ReplyGeneratedEvent) -> None:
        """Route a complete reply to its channel; web replies are the WebSocket's business."""
        reply = event.payload
        if event.channel is Channel.VOICE:
            await self.voice.deliver(str(reply.turn_id), reply.text, reply.flags)
            return
        if event.channel not in (Channel.SMS, Channel.WHATSAPP):
            return
        address = await self.conversations.address(event.conversation_id)
        if address is None:
            return
        template = template_named(reply.flags) if event.channel is Channel.WHATSAPP else None
        if template is not None:
            # Outside WhatsApp's 24-hour window only an approved template may be sent.
            await self.outbound.send_template(
                address, str(reply.reply_id), template, reply.template_variables
            )
        elif reply.text.strip():
            await self.outbound.send(address, str(reply.reply_id), reply.text)

    async def erase(self, event: CustomerErasedEvent) -> None:
        """Forget addresses, parked fragments and counters that name the erased customer."""
        prefix = self.conversations.prefix
        patterns = conversation_keys(
            event,
            prefix,
            [
                "addr:{conversation}",
                "burst:{conversation}",
                ASKED_TEMPLATE,
                # The closing question's send claims name the conversation.
                "sent:survey:{conversation}:*",
                "sent:survey-thanks:{conversation}:*",
            ],
        )
        for identity in event.payload.identities:
            patterns.append(f"{prefix}rate:*:{identity}")
            if identity.startswith("phone:"):
                patterns.append(f"{prefix}msgconv:*:{identity.removeprefix('phone:')}")
                # A closing question still awaiting this number's answer.
                patterns.append(f"{prefix}survey:*:{identity.removeprefix('phone:')}")
        await delete_keys(self.conversations.redis, patterns)
