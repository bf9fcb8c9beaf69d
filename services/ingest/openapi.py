"""The OpenAPI 3.1 description of ingest's HTTP surface, served at /openapi.json.

Bodies are described by the same pydantic models that validate them, so the document cannot
drift from what the edge accepts; a test checks that every route is documented and that the
document is valid OpenAPI.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.ingest.api import IncomingFeedback, IncomingMessage
from services.ingest.channels.routes import VoiceTurnRequest


class VoiceStep(BaseModel):
    """What a voice adapter should do next on the call."""

    speak: str
    action: str
    """`gather` (listen again), `dial` (transfer), `wait` (poll the reply), `hangup`."""
    dial: str | None = None
    turn_id: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx JSON body."""

    error: str
    """A machine-readable code, e.g. `invalid_request`, `rate_limited`."""
    message: str
    """A sentence saying what was wrong and how to fix it."""


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "refused", "content": _json("ErrorBody")} for c in codes}


_TWILIO_FORM = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "description": "Twilio's webhook parameters (MessageSid, From, To, Body; "
                "CallSid, SpeechResult for voice). Signed with X-Twilio-Signature.",
                "additionalProperties": {"type": "string"},
            }
        }
    },
}
_TWIML = {
    "200": {
        "description": "TwiML for Twilio to execute",
        "content": {"application/xml": {"schema": {"type": "string"}}},
    },
    "403": {"description": "missing or invalid X-Twilio-Signature"},
    "413": {"description": "body too large"},
}
_SIGNATURE = {
    "name": "X-Twilio-Signature",
    "in": "header",
    "required": True,
    "schema": {"type": "string"},
}


def _conversation_param() -> dict[str, Any]:
    return {
        "name": "conversation_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"},
    }


def build_spec() -> dict[str, Any]:
    """The document."""
    models: dict[str, type[BaseModel]] = {
        "IncomingMessage": IncomingMessage,
        "IncomingFeedback": IncomingFeedback,
        "VoiceTurnRequest": VoiceTurnRequest,
        "VoiceStep": VoiceStep,
        "ErrorBody": ErrorBody,
    }
    schemas: dict[str, Any] = {}
    for name, model in models.items():
        schema = _schema(model)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    probe = {"200": {"description": "ok"}, "503": {"description": "not ready"}}
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "The customer web chat page", "responses": _html()}},
        "/v1/conversations/{conversation_id}/messages": {
            "post": {
                "summary": "Send a customer message; the reply streams on the WebSocket",
                "security": [{"apiKey": []}, {}],
                "parameters": [_conversation_param()],
                "requestBody": {"required": True, "content": _json("IncomingMessage")},
                "responses": {
                    "202": {"description": "accepted: turn_id, event_id, trace_id"},
                    **_errors(400, 401, 413, 415, 422, 429, 503),
                },
            }
        },
        "/widget.js": {
            "get": {
                "summary": "The embeddable chat widget (one <script> tag)",
                "responses": {
                    "200": {
                        "description": "JavaScript",
                        "content": {"text/javascript": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/widget-demo": {"get": {"summary": "A page embedding the widget", "responses": _html()}},
        "/v1/conversations/{conversation_id}/feedback": {
            "post": {
                "summary": "A satisfaction rating (1-5 and a comment) for the conversation",
                "security": [{"apiKey": []}, {}],
                "parameters": [_conversation_param()],
                "requestBody": {"required": True, "content": _json("IncomingFeedback")},
                "responses": {
                    "202": {"description": "accepted"},
                    **_errors(400, 401, 413, 415, 422, 503),
                },
            }
        },
        "/v1/conversations/{conversation_id}/ws": {
            "get": {
                "summary": "WebSocket chat: send message frames, receive accepted/delta/reply",
                "description": "Upgrade to a WebSocket. Query: customer_id (required), key "
                "(widget key), customer_hash (HMAC-SHA256 of customer_id with the tenant's "
                "identity secret). Refusals close with 4000 + the HTTP status.",
                "parameters": [
                    _conversation_param(),
                    {"name": "customer_id", "in": "query", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "key", "in": "query", "schema": {"type": "string"}},
                    {"name": "customer_hash", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"101": {"description": "switching protocols"}},
            }
        },
        "/v1/channels/twilio/messages": {
            "post": {
                "summary": "Twilio SMS and WhatsApp webhook",
                "parameters": [_SIGNATURE],
                "requestBody": _TWILIO_FORM,
                "responses": _TWIML,
            }
        },
        "/v1/channels/twilio/voice": {
            "post": {
                "summary": "Twilio Voice: an incoming call",
                "parameters": [_SIGNATURE],
                "requestBody": _TWILIO_FORM,
                "responses": _TWIML,
            }
        },
        "/v1/channels/twilio/voice/gather": {
            "post": {
                "summary": "Twilio Voice: the caller's speech (SpeechResult)",
                "parameters": [_SIGNATURE],
                "requestBody": _TWILIO_FORM,
                "responses": _TWIML,
            }
        },
        "/v1/channels/twilio/voice/wait": {
            "post": {
                "summary": "Twilio Voice: still waiting for a reply",
                "parameters": [
                    _SIGNATURE,
                    {"name": "turn_id", "in": "query", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "try", "in": "query", "schema": {"type": "integer"}},
                ],
                "requestBody": _TWILIO_FORM,
                "responses": _TWIML,
            }
        },
        "/v1/channels/whatsapp": {
            "get": {
                "summary": "WhatsApp Cloud API verification handshake",
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}}
                    for n in ("hub.mode", "hub.verify_token", "hub.challenge")
                ],
                "responses": {
                    "200": {"description": "hub.challenge echoed",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "403": {"description": "wrong verify token"},
                },
            },
            "post": {
                "summary": "WhatsApp Cloud API webhook (X-Hub-Signature-256)",
                "parameters": [
                    {"name": "X-Hub-Signature-256", "in": "header", "required": True,
                     "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {"200": {"description": "received"}, **_errors(400, 403, 413)},
            },
        },
        "/v1/channels/voice/turns": {
            "post": {
                "summary": "Generic voice adapter: transcript in, speakable reply out",
                "security": [{"apiKey": []}],
                "requestBody": {"required": True, "content": _json("VoiceTurnRequest")},
                "responses": {
                    "200": {"description": "next step", "content": _json("VoiceStep")},
                    **_errors(400, 401, 413, 422, 429),
                },
            }
        },
        "/v1/channels/voice/turns/{turn_id}/reply": {
            "post": {
                "summary": "Generic voice adapter: the reply to a turn that said `wait`",
                "security": [{"apiKey": []}],
                "parameters": [
                    {"name": "turn_id", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "try", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {"description": "next step", "content": _json("VoiceStep")},
                    **_errors(400, 401),
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "ok"}}}
        },
        "/livez": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {"get": {"summary": "Readiness", "responses": probe}},
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "ok"}}}
        },
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Care-by-Design ingest",
            "version": "1",
            "description": "The customer-facing edge: web chat, REST, messaging and voice.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _html() -> dict[str, Any]:
    return {
        "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
    }


_DOCUMENT: dict[str, Any] = {}


async def openapi_endpoint(_: Request) -> Response:
    """GET /openapi.json."""
    if not _DOCUMENT:
        _DOCUMENT.update(build_spec())
    return JSONResponse(_DOCUMENT)
