"""Replies out through the messaging providers' REST APIs."""

from __future__ import annotations

import json
import logging
import re

import httpx
import redis.asyncio as aioredis
from prometheus_client import Counter

from services.ingest.channels.formatting import SMS_LIMIT, WHATSAPP_LIMIT, plain_text, split_message
from services.ingest.channels.identity import Address
from services.ingest.settings import IngestSettings
from shared.kafka import PermanentError

log = logging.getLogger(__name__)

SENT = Counter(
    "cbd_ingest_outbound_messages_total",
    "Messages sent to customers through a provider, by provider and outcome.",
    ["provider", "outcome"],
)


class ProviderError(Exception):
    """The provider refused or failed a send; the reply event is retried."""


class UnknownTemplate(PermanentError):
    """A reply names a template this deployment has no Content SID for: retrying cannot help,
    so the reply is dead-lettered with the reason."""


TEMPLATE_FLAG = "whatsapp_template:"
"""A reply flag naming the approved template it must be sent as (`whatsapp_template:<name>`)."""

_CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")


def template_named(flags: list[str]) -> str | None:
    """The template a reply's flags say it must go out as, if any."""
    for flag in flags:
        if flag.startswith(TEMPLATE_FLAG) and flag[len(TEMPLATE_FLAG) :]:
            return flag[len(TEMPLATE_FLAG) :]
    return None


class MessagingOutbound:
    """Sends a reply as one or more provider messages, each exactly once."""

    def __init__(
        self, settings: IngestSettings, redis: aioredis.Redis, client: httpx.AsyncClient
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.client = client

    async def send(self, address: Address, reply_id: str, text: str) -> int:
        """Format and send; return how many messages went out now (0 on a redelivery)."""
        limit = WHATSAPP_LIMIT if address.channel == "whatsapp" else SMS_LIMIT
        pieces = split_message(plain_text(text), limit)
        sent = 0
        for i, piece in enumerate(pieces):
            # A redelivered reply event must not text the customer twice.
            claim = f"{self.settings.redis.key_prefix}sent:{reply_id}:{i}"
            if not await self.redis.set(claim, "1", nx=True, ex=7 * 24 * 3600):
                continue
            try:
                if address.provider == "meta":
                    await self._meta(address, piece)
                else:
                    await self._twilio(address, piece)
            except Exception:
                await self.redis.delete(claim)
                SENT.labels(address.provider, "failed").inc()
                raise
            SENT.labels(address.provider, "sent").inc()
            sent += 1
        return sent

    async def send_template(
        self, address: Address, reply_id: str, name: str, variables: dict[str, str]
    ) -> int:
        """Send an approved WhatsApp template once; 1 if it went out now (0 on a redelivery).

        Twilio sends it by Content SID (`ContentSid`, `ContentVariables` as JSON); Meta's
        Cloud API by name and language, the variables as body parameters in {{1}}, {{2}} order.
        """
        claim = f"{self.settings.redis.key_prefix}sent:{reply_id}:template"
        if not await self.redis.set(claim, "1", nx=True, ex=7 * 24 * 3600):
            return 0
        try:
            if address.provider == "meta":
                await self._meta_template(address, name, variables)
            else:
                await self._twilio_template(address, name, variables)
        except Exception:
            await self.redis.delete(claim)
            SENT.labels(address.provider, "failed").inc()
            raise
        SENT.labels(address.provider, "sent_template").inc()
        return 1

    def content_sid(self, name: str) -> str:
        """The Twilio Content SID of template `name` (a name that is a Content SID is one)."""
        sid = self.settings.whatsapp_templates.get(name)
        if sid is None and _CONTENT_SID.match(name):
            sid = name
        if sid is None:
            raise UnknownTemplate(
                f"no Content SID for WhatsApp template {name!r}; "
                "add it to CBD_INGEST_WHATSAPP_TEMPLATES"
            )
        return sid

    async def _twilio_template(
        self, address: Address, name: str, variables: dict[str, str]
    ) -> None:
        s = self.settings
        url = f"{s.twilio_api_base}/2010-04-01/Accounts/{s.twilio_account_sid}/Messages.json"
        form = {
            "To": address.to,
            "From": s.twilio_whatsapp_from,
            "ContentSid": self.content_sid(name),
        }
        if variables:
            form["ContentVariables"] = json.dumps(variables)
        resp = await self.client.post(
            url, data=form, auth=(s.twilio_account_sid, s.twilio_auth_token.get_secret_value())
        )
        if resp.status_code >= 300:
            raise ProviderError(f"Twilio answered {resp.status_code}: {resp.text[:300]}")

    async def _meta_template(self, address: Address, name: str, variables: dict[str, str]) -> None:
        s = self.settings
        template: dict[str, object] = {
            "name": name,
            "language": {"code": s.whatsapp_template_language},
        }
        if variables:
            # {{1}}, {{2}}, ... {{10}}: numeric order, not the strings' order.
            ordered = sorted(variables, key=lambda k: (not k.isdigit(), k.zfill(4)))
            parameters = [{"type": "text", "text": variables[key]} for key in ordered]
            template["components"] = [{"type": "body", "parameters": parameters}]
        resp = await self.client.post(
            f"{s.whatsapp_api_base}/{s.whatsapp_phone_number_id}/messages",
            json={
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": address.to,
                "type": "template",
                "template": template,
            },
            headers={"authorization": f"Bearer {s.whatsapp_access_token.get_secret_value()}"},
        )
        if resp.status_code >= 300:
            raise ProviderError(f"WhatsApp answered {resp.status_code}: {resp.text[:300]}")

    async def _twilio(self, address: Address, body: str) -> None:
        s = self.settings
        sender = s.twilio_whatsapp_from if address.channel == "whatsapp" else s.twilio_sms_from
        url = f"{s.twilio_api_base}/2010-04-01/Accounts/{s.twilio_account_sid}/Messages.json"
        resp = await self.client.post(
            url,
            data={"To": address.to, "From": sender, "Body": body},
            auth=(s.twilio_account_sid, s.twilio_auth_token.get_secret_value()),
        )
        if resp.status_code >= 300:
            raise ProviderError(f"Twilio answered {resp.status_code}: {resp.text[:300]}")

    async def _meta(self, address: Address, body: str) -> None:
        s = self.settings
        resp = await self.client.post(
            f"{s.whatsapp_api_base}/{s.whatsapp_phone_number_id}/messages",
            json={
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": address.to,
                "type": "text",
                "text": {"preview_url": False, "body": body},
            },
            headers={"authorization": f"Bearer {s.whatsapp_access_token.get_secret_value()}"},
        )
        if resp.status_code >= 300:
            raise ProviderError(f"WhatsApp answered {resp.status_code}: {resp.text[:300]}")
