"""Provider webhooks: Twilio SMS, WhatsApp and Voice, Meta's WhatsApp Cloud API, generic voice.

Each webhook checks the provider's signature before reading anything, drops redeliveries by
the provider's message id, resolves the sender's number to a customer identity, and answers
in the provider's format. Messages are parked for burst merging, so a reply goes out through
the provider's REST API later (see outbound.py); calls get TwiML with the reply spoken.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from services.ingest.channels import twiml
from services.ingest.channels.bursts import BurstMerger
from services.ingest.channels.identity import Address, Conversations, phone_identity
from services.ingest.channels.voice import VoiceReplies, VoiceReply, next_step
from services.ingest.edge import EdgeGuard, Refused, constant_time_equal, read_body
from services.ingest.settings import IngestSettings
from shared.events import MAX_MESSAGE_CHARS, Channel, Identifier

log = logging.getLogger(__name__)

Accept = Callable[[str, str, Channel, str, str], Awaitable[Any]]
"""IngestAPI.accept: (conversation_id, customer_id, channel, text, client_message_id)."""

GREETING = "Hello, thanks for calling. How can I help you today?"
STILL_THERE = "Are you still there? Tell me how I can help."

TWIML = "application/xml"


class VoiceTurnRequest(BaseModel):
    """Body of POST /v1/channels/voice/turns, for telephony stacks other than Twilio."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    call_id: Identifier
    caller: Annotated[str, StringConstraints(min_length=3, max_length=40)]
    """The caller's number, any common format."""
    transcript: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]


def refused(err: Refused, *, twilio: bool = False) -> Response:
    """The JSON (or, for Twilio, plain) 4xx for a refusal."""
    headers = {"retry-after": str(err.retry_after)} if err.retry_after else None
    if twilio:
        return PlainTextResponse(err.message, status_code=err.status, headers=headers)
    return JSONResponse(
        {"error": err.error, "message": err.message}, status_code=err.status, headers=headers
    )


class ChannelAPI:
    """Routes for the messaging and voice providers."""

    def __init__(self, settings: IngestSettings, guard: EdgeGuard) -> None:
        self.settings = settings
        self.guard = guard
        self.accept: Accept | None = None
        self.conversations: Conversations | None = None
        self.bursts: BurstMerger | None = None
        self.voice: VoiceReplies | None = None

    def routes(self) -> list[BaseRoute]:
        """The provider-facing routes."""
        return [
            Route("/v1/channels/twilio/messages", self.twilio_message, methods=["POST"]),
            Route("/v1/channels/twilio/voice", self.twilio_call, methods=["POST"]),
            Route("/v1/channels/twilio/voice/gather", self.twilio_gather, methods=["POST"]),
            Route("/v1/channels/twilio/voice/wait", self.twilio_wait, methods=["POST"]),
            Route("/v1/channels/whatsapp", self.meta_handshake, methods=["GET"]),
            Route("/v1/channels/whatsapp", self.meta_message, methods=["POST"]),
            Route("/v1/channels/voice/turns", self.voice_turn, methods=["POST"]),
            Route("/v1/channels/voice/turns/{turn_id}/reply", self.voice_poll, methods=["POST"]),
        ]

    def _ready(self) -> tuple[Accept, Conversations, BurstMerger, VoiceReplies]:
        if (
            self.accept is None
            or self.conversations is None
            or self.bursts is None
            or self.voice is None
        ):
            raise Refused(503, "starting", "the service is starting; try again shortly")
        return self.accept, self.conversations, self.bursts, self.voice

    def _public_url(self, request: Request) -> str:
        """The URL the provider signed: ours as the world sees it, not as the proxy passed it."""
        if self.settings.public_base_url:
            query = f"?{request.url.query}" if request.url.query else ""
            return self.settings.public_base_url.rstrip("/") + request.url.path + query
        return str(request.url)

    async def _twilio_form(self, request: Request) -> dict[str, str]:
        """Read and verify a Twilio webhook: size-limited, form-encoded, signed."""
        body = await read_body(request, self.settings.max_body_bytes, channel="twilio")
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        self.guard.twilio(
            self._public_url(request), params, request.headers.get("x-twilio-signature")
        )
        return params

    async def twilio_message(self, request: Request) -> Response:
        """Twilio's incoming SMS or WhatsApp message webhook; answers with empty TwiML."""
        try:
            params = await self._twilio_form(request)
            _, conversations, bursts, _ = self._ready()
            sender = params.get("From", "")
            identity = phone_identity(sender)
            message_id = params.get("MessageSid", "")
            text = params.get("Body", "").strip()[:MAX_MESSAGE_CHARS]
            if identity is None or not message_id:
                raise Refused(400, "invalid_request", "From and MessageSid are required")
            channel = Channel.WHATSAPP if sender.startswith("whatsapp:") else Channel.SMS
            if not text:
                # A picture or a sticker with no words: nothing to answer yet.
                return Response(twiml.EMPTY, media_type=TWIML)
            if not await self.guard.first_delivery("twilio", message_id):
                return Response(twiml.EMPTY, media_type=TWIML)
            await self.guard.rate_limit(channel.value, "default", identity)
            conversation = await conversations.current(
                channel.value, identity, Address("twilio", channel.value, sender)
            )
            await bursts.add(conversation, identity, channel, text, message_id)
        except Refused as err:
            return refused(err, twilio=True)
        return Response(twiml.EMPTY, media_type=TWIML)

    async def meta_handshake(self, request: Request) -> Response:
        """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
        q = request.query_params
        token = self.settings.whatsapp_verify_token.get_secret_value()
        if (
            q.get("hub.mode") == "subscribe"
            and token
            and constant_time_equal(q.get("hub.verify_token", ""), token)
        ):
            return PlainTextResponse(q.get("hub.challenge", ""))
        return PlainTextResponse("verification failed", status_code=403)

    async def meta_message(self, request: Request) -> Response:
        """WhatsApp Cloud API webhook: JSON, signed with the app secret; 200 quickly."""
        try:
            body = await read_body(request, self.settings.max_body_bytes, channel="whatsapp")
            self.guard.meta(body, request.headers.get("x-hub-signature-256"))
            _, conversations, bursts, _ = self._ready()
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise Refused(400, "malformed_json", "body is not valid JSON") from exc
            for message in _meta_messages(data):
                wa_id, message_id, text = message
                identity = phone_identity(wa_id)
                if identity is None or not text:
                    continue
                if not await self.guard.first_delivery("meta", message_id):
                    continue
                await self.guard.rate_limit("whatsapp", "default", identity)
                conversation = await conversations.current(
                    "whatsapp", identity, Address("meta", "whatsapp", wa_id)
                )
                await bursts.add(conversation, identity, Channel.WHATSAPP, text, message_id)
        except Refused as err:
            return refused(err)
        return JSONResponse({"status": "received"})

    async def twilio_call(self, request: Request) -> Response:
        """An incoming call (or a caller who went quiet): greet and listen."""
        try:
            await self._twilio_form(request)
        except Refused as err:
            return refused(err, twilio=True)
        lang = self.settings.voice_language
        again = request.query_params.get("again") == "1"
        return Response(
            twiml.response(
                twiml.gather(
                    "/v1/channels/twilio/voice/gather",
                    lang,
                    twiml.say(STILL_THERE if again else GREETING, lang),
                ),
                twiml.redirect("/v1/channels/twilio/voice?again=1"),
            ),
            media_type=TWIML,
        )

    async def twilio_gather(self, request: Request) -> Response:
        """What the caller said: a turn; the reply is spoken, and we listen again."""
        try:
            params = await self._twilio_form(request)
            speech = params.get("SpeechResult", "").strip()
            if not speech:
                return Response(
                    twiml.response(twiml.redirect("/v1/channels/twilio/voice?again=1")),
                    media_type=TWIML,
                )
            step = await self._voice_turn(params.get("CallSid", ""), params.get("From", ""), speech)
        except Refused as err:
            return refused(err, twilio=True)
        return Response(self._render(step), media_type=TWIML)

    async def twilio_wait(self, request: Request) -> Response:
        """Still waiting for a reply: try once more, then apologise and transfer."""
        try:
            await self._twilio_form(request)
            turn_id = request.query_params.get("turn_id", "")
            tries = request.query_params.get("try", "1")
            step = await self._voice_wait(turn_id, tries=int(tries) + 1 if tries.isdigit() else 9)
        except Refused as err:
            return refused(err, twilio=True)
        return Response(self._render(step), media_type=TWIML)

    def _render(self, step: VoiceReply) -> str:
        lang = self.settings.voice_language
        gather_url = "/v1/channels/twilio/voice/gather"
        if step.action == "dial" and step.dial:
            return twiml.response(twiml.say(step.speak, lang), twiml.dial(step.dial))
        if step.action == "wait":
            return twiml.response(
                twiml.say(step.speak, lang),
                twiml.redirect(
                    f"/v1/channels/twilio/voice/wait?turn_id={step.turn_id}&try={step.tries}"
                ),
            )
        if step.action == "hangup":
            return twiml.response(twiml.say(step.speak, lang), twiml.hangup())
        return twiml.response(
            twiml.gather(gather_url, lang, twiml.say(step.speak, lang)),
            twiml.redirect("/v1/channels/twilio/voice?again=1"),
        )

    async def _voice_turn(self, call_id: str, caller: str, speech: str) -> VoiceReply:
        accept, _, _, _ = self._ready()
        identity = phone_identity(caller)
        if identity is None or not call_id:
            raise Refused(400, "invalid_request", "CallSid and a caller number are required")
        await self.guard.rate_limit("voice", "default", identity)
        # The same words at the same point of a call are one turn, even if Twilio retries.
        said = hashlib.sha256(speech.encode()).hexdigest()[:16]
        accepted = await accept(
            f"call-{call_id}", identity, Channel.VOICE, speech[:MAX_MESSAGE_CHARS], said
        )
        return await self._voice_wait(str(accepted.turn_id), tries=1)

    async def _voice_wait(self, turn_id: str, *, tries: int) -> VoiceReply:
        _, _, _, voice = self._ready()
        if not turn_id:
            raise Refused(400, "invalid_request", "turn_id is required")
        reply = await voice.wait(turn_id, self.settings.voice_reply_timeout_s)
        return next_step(
            reply,
            turn_id=turn_id,
            agent_number=self.settings.voice_agent_number,
            max_chars=self.settings.voice_max_chars,
            tries=tries,
            max_tries=self.settings.voice_max_waits,
        )

    async def voice_turn(self, request: Request) -> Response:
        """Generic voice adapter: transcript in, `{speak, action, dial, turn_id}` out."""
        try:
            self.guard.api_key(_api_key(request), channel="voice")
            body = await read_body(request, self.settings.max_body_bytes, channel="voice")
            try:
                turn = VoiceTurnRequest.model_validate_json(body)
            except ValidationError as exc:
                raise Refused(422, "invalid_request", _problems(exc)) from exc
            step = await self._voice_turn(turn.call_id, turn.caller, turn.transcript)
        except Refused as err:
            return refused(err)
        return JSONResponse(asdict(step))

    async def voice_poll(self, request: Request) -> Response:
        """Generic voice adapter: the reply to a turn that answered `wait`."""
        try:
            self.guard.api_key(_api_key(request), channel="voice")
            tries = request.query_params.get("try", "1")
            step = await self._voice_wait(
                request.path_params["turn_id"], tries=int(tries) + 1 if tries.isdigit() else 9
            )
        except Refused as err:
            return refused(err)
        return JSONResponse(asdict(step))


def _api_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:3]
    )


def _meta_messages(data: Any) -> list[tuple[str, str, str]]:
    """(wa_id, message id, text) of each text message in a Cloud API webhook payload."""
    found: list[tuple[str, str, str]] = []
    if not isinstance(data, dict) or data.get("object") != "whatsapp_business_account":
        raise Refused(400, "invalid_request", "not a WhatsApp Business Account webhook")
    for entry in data.get("entry") or []:
        for change in (entry or {}).get("changes") or []:
            value = (change or {}).get("value") or {}
            for message in value.get("messages") or []:
                if not isinstance(message, dict):
                    continue
                text = ((message.get("text") or {}).get("body") or "").strip()
                if message.get("type") == "text" and message.get("from") and message.get("id"):
                    found.append((str(message["from"]), str(message["id"]), text))
    return found
