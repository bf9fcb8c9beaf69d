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
from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response

from services.ingest.channels import twiml
from services.ingest.channels.identity import Address, phone_identity
from services.ingest.channels.survey import MessagingSurvey
from services.ingest.channels.voice import Action, VoiceReplies, VoiceReply, is_goodbye, next_step
from services.ingest.edge import (
    Caller,
    EdgeGuard,
    Refused,
    constant_time_equal,
    json_depth_exceeds,
    read_body,
)
from services.ingest.intake import Intake, screen, without_controls
from services.ingest.ownership import Party
from services.ingest.routers.deps import (
    ClientAddress,
    ConversationsDep,
    GuardDep,
    IntakeDep,
    SettingsDep,
    SurveyDep,
    VoiceDep,
    presented_key,
)
from services.ingest.settings import IngestSettings
from shared.events import MAX_MESSAGE_CHARS, Channel, Identifier
from shared.http import ApiError, error_responses, validation_error
from shared.survey import gather_rating_twiml, parse_keypad_rating

log = logging.getLogger(__name__)

router = APIRouter(tags=["channels"])

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


class VoiceStep(BaseModel):
    """What the call should do next."""

    speak: str
    action: Action
    dial: str | None = None
    turn_id: str | None = None
    """For `wait`: the turn whose reply is still coming; poll its /reply."""
    tries: int = 0


def _public_url(settings: IngestSettings, request: Request) -> str:
    """The URL the provider signed: ours as the world sees it, not as the proxy passed it."""
    if settings.public_base_url:
        query = f"?{request.url.query}" if request.url.query else ""
        return settings.public_base_url.rstrip("/") + request.url.path + query
    return str(request.url)


async def twilio_form(request: Request, settings: SettingsDep, guard: GuardDep) -> dict[str, str]:
    """A Twilio webhook's parameters: size-limited, form-encoded, and signed by Twilio."""
    body = await read_body(request, settings.max_body_bytes, channel="twilio")
    params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    guard.twilio(_public_url(settings, request), params, request.headers.get("x-twilio-signature"))
    return params


TwilioForm = Annotated[dict[str, str], Depends(twilio_form)]
"""The verified parameters; a missing or wrong signature is refused before anything else."""


def api_key_for_voice(conn: HTTPConnection, guard: GuardDep) -> Caller:
    """The tenant behind a generic voice adapter's request: a key is always required.

    Voice is a provider channel; only a caller holding a tenant's key may speak for it.
    """
    key = presented_key(conn)
    if key is None:
        raise Refused(401, "missing_api_key", "the voice adapter needs a tenant's X-API-Key")
    return guard.api_key(key, channel="voice")


VoiceCaller = Annotated[Caller, Depends(api_key_for_voice)]

TWILIO_DOCS: dict[int | str, dict[str, Any]] = {
    200: {"content": {TWIML: {}}, "description": "TwiML for Twilio"},
    **error_responses(403, 413, 429, 503),
}


@router.post(
    "/v1/channels/twilio/messages",
    response_class=Response,
    responses=TWILIO_DOCS,
    summary="Twilio: an SMS or WhatsApp message",
)
async def twilio_message(
    params: TwilioForm,
    settings: SettingsDep,
    guard: GuardDep,
    intake: IntakeDep,
    conversations: ConversationsDep,
    survey: SurveyDep,
) -> Response:
    """Twilio's incoming SMS or WhatsApp message webhook; answers with empty TwiML.

    The answer to a closing question ("4", "five stars") is a rating, never a turn.
    """
    sender = params.get("From", "")
    identity = phone_identity(sender)
    message_id = params.get("MessageSid", "")
    text = params.get("Body", "").strip()[:MAX_MESSAGE_CHARS]
    if identity is None or not message_id:
        raise Refused(400, "invalid_request", "From and MessageSid are required")
    channel = Channel.WHATSAPP if sender.startswith("whatsapp:") else Channel.SMS
    # A picture or a sticker with no words: nothing to answer yet. A redelivery: done before.
    if text and await guard.first_delivery("twilio", message_id):
        address = Address("twilio", channel.value, sender)
        if await _survey_answer(
            guard, survey, "twilio", channel, identity, address, text, message_id
        ):
            return Response(twiml.EMPTY, media_type=TWIML)
        conversation = await conversations.current(channel.value, identity, address)
        party = Party(settings.messaging_tenant, identity)
        # Limited per number and tenant, not per address: providers send from shared ones.
        await intake.fragment(conversation, party, channel, text, message_id)
    return Response(twiml.EMPTY, media_type=TWIML)


@router.get(
    "/v1/channels/whatsapp",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "The challenge"}},
    summary="WhatsApp Cloud API: the subscription handshake",
)
async def meta_handshake(request: Request, settings: SettingsDep) -> Response:
    """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
    q = request.query_params
    token = settings.whatsapp_verify_token.get_secret_value()
    if (
        q.get("hub.mode") == "subscribe"
        and token
        and constant_time_equal(q.get("hub.verify_token", ""), token)
    ):
        return PlainTextResponse(q.get("hub.challenge", ""))
    return PlainTextResponse("verification failed", status_code=403)


@router.post(
    "/v1/channels/whatsapp",
    responses=error_responses(400, 403, 413, 429, 503),
    summary="WhatsApp Cloud API: messages",
)
async def meta_message(
    request: Request,
    settings: SettingsDep,
    guard: GuardDep,
    intake: IntakeDep,
    conversations: ConversationsDep,
    survey: SurveyDep,
) -> dict[str, str]:
    """WhatsApp Cloud API webhook: JSON, signed with the app secret; 200 quickly."""
    body = await read_body(request, settings.max_body_bytes, channel="whatsapp")
    guard.meta(body, request.headers.get("x-hub-signature-256"))
    if json_depth_exceeds(body, 16):
        raise Refused(400, "too_deep", "the JSON body is nested too deeply")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Refused(400, "malformed_json", "body is not valid JSON") from exc
    for wa_id, message_id, text in _meta_messages(data):
        identity = phone_identity(wa_id)
        if identity is None or not text:
            continue
        if not await guard.first_delivery("meta", message_id):
            continue
        address = Address("meta", "whatsapp", wa_id)
        channel = Channel.WHATSAPP
        if await _survey_answer(
            guard, survey, "meta", channel, identity, address, text, message_id
        ):
            continue
        conversation = await conversations.current("whatsapp", identity, address)
        party = Party(settings.messaging_tenant, identity)
        await intake.fragment(
            conversation, party, Channel.WHATSAPP, text[:MAX_MESSAGE_CHARS], message_id
        )
    return {"status": "received"}


async def _survey_answer(
    guard: EdgeGuard,
    survey: MessagingSurvey,
    provider: str,
    channel: Channel,
    identity: str,
    address: Address,
    text: str,
    message_id: str,
) -> bool:
    """Whether the text answered a closing question (and was recorded as a rating).

    If the rating could not be recorded, the message id is forgotten so the provider's retry
    of this webhook is taken instead of dropped as a redelivery.
    """
    try:
        answered = await survey.answer(
            channel, identity, address, without_controls(text)[:MAX_MESSAGE_CHARS], message_id
        )
    except ApiError:
        await guard.forget_delivery(provider, message_id)
        raise
    return answered is not None


@router.post(
    "/v1/channels/twilio/voice",
    response_class=Response,
    responses=TWILIO_DOCS,
    summary="Twilio: an incoming call",
)
async def twilio_call(request: Request, params: TwilioForm, settings: SettingsDep) -> Response:
    """An incoming call (or a caller who went quiet): greet and listen."""
    lang = settings.voice_language
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


@router.post(
    "/v1/channels/twilio/voice/gather",
    response_class=Response,
    responses=TWILIO_DOCS,
    summary="Twilio: what the caller said",
)
async def twilio_gather(
    params: TwilioForm,
    settings: SettingsDep,
    intake: IntakeDep,
    voice: VoiceDep,
) -> Response:
    """What the caller said: a turn; the reply is spoken, and we listen again."""
    speech = params.get("SpeechResult", "").strip()
    if not speech:
        return Response(
            twiml.response(twiml.redirect("/v1/channels/twilio/voice?again=1")),
            media_type=TWIML,
        )
    if is_goodbye(speech):
        # The caller is done: ask for a keypad rating (as Amazon Connect's post-call survey
        # does) instead of sending a turn nobody needs answered.
        return Response(await _closing(settings, intake, params), media_type=TWIML)
    step = await _voice_turn(
        settings, intake, voice, settings.messaging_tenant,
        params.get("CallSid", ""), params.get("From", ""), speech, None,
    )  # fmt: skip
    return Response(_render(settings, step), media_type=TWIML)


VOICE_RATING_URL = "/v1/channels/twilio/voice/rating"
THANKS_GOODBYE = "Thank you for calling. Goodbye."


def _call_party(settings: IngestSettings, params: dict[str, str]) -> tuple[str, Party]:
    """The call's conversation id and its caller (400 without a call id and a number)."""
    identity = phone_identity(params.get("From", ""))
    call_id = params.get("CallSid", "")
    if identity is None or not call_id:
        raise Refused(400, "invalid_request", "CallSid and a caller number are required")
    return f"call-{call_id}", Party(settings.messaging_tenant, identity)


async def _closing(settings: IngestSettings, intake: Intake, params: dict[str, str]) -> str:
    """TwiML for a caller who said goodbye: the keypad rating if there was a conversation."""
    conversation, party = _call_party(settings, params)
    lang = settings.voice_language
    try:
        await intake.owners.check(conversation, party)
    except ApiError as err:
        if err.status != 404:
            raise
        # Goodbye before any question: nothing to rate.
        return twiml.response(twiml.say(THANKS_GOODBYE, lang), twiml.hangup())
    return gather_rating_twiml(VOICE_RATING_URL, language=lang, goodbye=THANKS_GOODBYE)


async def _end_call(intake: Intake, conversation: str, party: Party) -> None:
    """Close the call's conversation (reason `ended`) if it had one; a repeat is a no-op."""
    try:
        await intake.end(conversation, party, Channel.VOICE)
    except ApiError as err:
        if err.status != 404:
            raise


@router.post(
    VOICE_RATING_URL,
    response_class=Response,
    responses=TWILIO_DOCS,
    summary="Twilio: the caller's keypad rating",
)
async def twilio_voice_rating(
    params: TwilioForm, settings: SettingsDep, intake: IntakeDep
) -> Response:
    """The digit pressed after the closing question: a 1-5 rating; then goodbye and hang up.

    Anything but 1-5 is no rating (never a guessed one). The conversation is closed either way.
    """
    conversation, party = _call_party(settings, params)
    rating = parse_keypad_rating(params.get("Digits"))
    if rating is not None:
        try:
            await intake.rate(
                conversation,
                party,
                Channel.VOICE,
                rating,
                # One rating per call, whatever Twilio retries.
                client_message_id=f"survey-{conversation}",
            )
        except ApiError as err:
            if err.status != 404:
                raise
    await _end_call(intake, conversation, party)
    lang = settings.voice_language
    return Response(
        twiml.response(twiml.say(THANKS_GOODBYE, lang), twiml.hangup()), media_type=TWIML
    )


CALL_OVER = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
"""Twilio's final call statuses: the call's conversation is over."""


@router.post(
    "/v1/channels/twilio/voice/status",
    response_class=Response,
    responses=TWILIO_DOCS,
    summary="Twilio: call status callback",
)
async def twilio_call_status(
    params: TwilioForm, settings: SettingsDep, intake: IntakeDep
) -> Response:
    """The call ended (the number's status callback): its conversation is closed (`ended`).

    So outcomes see when a call really ended, not an idle timeout later.
    """
    if params.get("CallStatus", "") in CALL_OVER:
        conversation, party = _call_party(settings, params)
        await _end_call(intake, conversation, party)
    return Response(twiml.response(), media_type=TWIML)


@router.post(
    "/v1/channels/twilio/voice/wait",
    response_class=Response,
    responses=TWILIO_DOCS,
    summary="Twilio: still waiting for the reply",
)
async def twilio_wait(
    request: Request, params: TwilioForm, settings: SettingsDep, voice: VoiceDep
) -> Response:
    """Still waiting for a reply: try once more, then apologise and transfer."""
    turn_id = request.query_params.get("turn_id", "")
    tries = request.query_params.get("try", "1")
    step = await _voice_wait(
        settings, voice, turn_id, tries=int(tries) + 1 if tries.isdigit() else 9
    )
    return Response(_render(settings, step), media_type=TWIML)


def _render(settings: IngestSettings, step: VoiceReply) -> str:
    lang = settings.voice_language
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


async def _voice_turn(
    settings: IngestSettings,
    intake: Intake,
    voice: VoiceReplies,
    tenant: str,
    call_id: str,
    caller: str,
    speech: str,
    address: str | None,
) -> VoiceReply:
    identity = phone_identity(caller)
    if identity is None or not call_id:
        raise Refused(400, "invalid_request", "CallSid and a caller number are required")
    text = screen(without_controls(speech))[:MAX_MESSAGE_CHARS]
    # The same words at the same point of a call are one turn, even if Twilio retries; the
    # id hashes the redacted words, so it cannot be reversed into a card number.
    said = hashlib.sha256(text.encode()).hexdigest()[:16]
    accepted = await intake.message(
        f"call-{call_id}", Party(tenant, identity), Channel.VOICE, text, said, ip=address
    )
    return await _voice_wait(settings, voice, accepted.turn_id, tries=1)


async def _voice_wait(
    settings: IngestSettings, voice: VoiceReplies, turn_id: str, *, tries: int
) -> VoiceReply:
    if not turn_id:
        raise Refused(400, "invalid_request", "turn_id is required")
    reply = await voice.wait(turn_id, settings.voice_reply_timeout_s)
    return next_step(
        reply,
        turn_id=turn_id,
        agent_number=settings.voice_agent_number,
        max_chars=settings.voice_max_chars,
        tries=tries,
        max_tries=settings.voice_max_waits,
    )


@router.post(
    "/v1/channels/voice/turns",
    responses=error_responses(400, 401, 404, 413, 422, 429, 503),
    summary="Generic voice adapter: a caller's words",
)
async def voice_turn(
    request: Request,
    caller: VoiceCaller,
    settings: SettingsDep,
    intake: IntakeDep,
    voice: VoiceDep,
    address: ClientAddress,
) -> VoiceStep:
    """Transcript in, `{speak, action, dial, turn_id}` out, for other telephony stacks."""
    body = await read_body(request, settings.max_body_bytes, channel="voice")
    if json_depth_exceeds(body):
        raise Refused(400, "too_deep", "the JSON body is nested too deeply")
    try:
        turn = VoiceTurnRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc.errors(), "voice turn") from exc
    step = await _voice_turn(
        settings, intake, voice, caller.tenant, turn.call_id, turn.caller, turn.transcript,
        address,
    )  # fmt: skip
    return VoiceStep(**asdict(step))


@router.post(
    "/v1/channels/voice/turns/{turn_id}/reply",
    responses=error_responses(400, 401, 503),
    summary="Generic voice adapter: the reply that was still coming",
)
async def voice_poll(
    turn_id: str,
    request: Request,
    caller: VoiceCaller,
    settings: SettingsDep,
    voice: VoiceDep,
) -> VoiceStep:
    """The reply to a turn that answered `wait`."""
    tries = request.query_params.get("try", "1")
    step = await _voice_wait(
        settings, voice, turn_id, tries=int(tries) + 1 if tries.isdigit() else 9
    )
    return VoiceStep(**asdict(step))


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
