"""A stand-in for Twilio's and Meta's REST APIs on loopback, checking what it receives.

It answers like the providers do (Twilio: 201 with a message resource; Meta: 200 with the
message id) and refuses, like them, a request with the wrong credentials or a malformed body,
so a test sees both what ingest sent and that it would have been accepted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.kit import REPLY_WAIT_S


@dataclass
class Sent:
    """One message a provider accepted."""

    provider: str
    to: str
    sender: str
    body: str
    template: str | None = None
    """The approved template it was sent as (Twilio: the Content SID; Meta: the name)."""
    variables: dict[str, str] | None = None
    """The template's placeholder values, by placeholder number."""


@dataclass
class ProviderStandIn:
    """Serve on `base_url` in a thread; `sent` lists what was accepted, `refused` the rest."""

    base_url: str
    account_sid: str
    auth_token: str
    meta_token: str
    phone_number_id: str
    sent: list[Sent] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def app(self) -> Starlette:
        """The provider endpoints ingest calls."""
        return Starlette(
            routes=[
                Route("/2010-04-01/Accounts/{sid}/Messages.json", self.twilio, methods=["POST"]),
                Route("/v21.0/{phone_id}/messages", self.meta, methods=["POST"]),
            ]
        )

    async def twilio(self, request: Request) -> JSONResponse:  # noqa: PLR0911 (one per refusal)
        """Twilio's Create Message: Basic auth with the account SID, form-encoded."""
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            self.refused.append("twilio: bad credentials")
            return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
        if request.path_params["sid"] != self.account_sid:
            self.refused.append("twilio: wrong account")
            return JSONResponse({"code": 20404, "message": "Not found"}, status_code=404)
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            self.refused.append("twilio: not form-encoded")
            return JSONResponse({"code": 21600, "message": "form expected"}, status_code=400)
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("ContentSid"):
            return self._twilio_content(form)
        if not form.get("To") or not form.get("From") or not form.get("Body"):
            self.refused.append(f"twilio: missing fields {sorted(form)}")
            return JSONResponse({"code": 21602, "message": "Body required"}, status_code=400)
        if len(form["Body"]) > 1600:
            self.refused.append("twilio: body over 1600")
            return JSONResponse({"code": 21617, "message": "too long"}, status_code=400)
        self.sent.append(Sent("twilio", form["To"], form["From"], form["Body"]))
        sid = "SM" + secrets.token_hex(16)
        return JSONResponse({"sid": sid, "status": "queued", "to": form["To"]}, status_code=201)

    def _twilio_content(self, form: dict[str, str]) -> JSONResponse:
        """A message from an approved Content template: `ContentSid`, `ContentVariables` JSON."""
        try:
            variables = json.loads(form.get("ContentVariables") or "{}")
        except ValueError:
            variables = None
        ok = (
            re.fullmatch(r"HX[0-9a-fA-F]{32}", form["ContentSid"])
            and form.get("To", "").startswith("whatsapp:")
            and form.get("From", "").startswith("whatsapp:")
            and isinstance(variables, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items())
        )
        if not ok:
            self.refused.append(f"twilio: malformed content message {sorted(form)}")
            return JSONResponse({"code": 21656, "message": "ContentVariables invalid"}, 400)
        self.sent.append(
            Sent("twilio", form["To"], form["From"], "", form["ContentSid"], variables)
        )
        sid = "MM" + secrets.token_hex(16)
        return JSONResponse({"sid": sid, "status": "queued", "to": form["To"]}, status_code=201)

    def _meta_template(self, data: dict[str, Any]) -> JSONResponse:
        """A template message: name, language and body parameters in placeholder order."""
        template = data.get("template") or {}
        components = template.get("components") or []
        parameters = [
            p["text"] for c in components if c.get("type") == "body" for p in c["parameters"]
        ]
        if not template.get("name") or not (template.get("language") or {}).get("code"):
            self.refused.append(f"meta: malformed template {data}")
            return JSONResponse({"error": {"code": 132000}}, status_code=400)
        variables = {str(i): text for i, text in enumerate(parameters, start=1)}
        self.sent.append(
            Sent("meta", data["to"], self.phone_number_id, "", template["name"], variables)
        )
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "messages": [{"id": "wamid." + secrets.token_hex(12)}],
            }
        )

    async def meta(self, request: Request) -> JSONResponse:
        """WhatsApp Cloud API's send message: Bearer token, JSON."""
        if request.headers.get("authorization") != f"Bearer {self.meta_token}":
            self.refused.append("meta: bad token")
            return JSONResponse({"error": {"code": 190}}, status_code=401)
        if request.path_params["phone_id"] != self.phone_number_id:
            self.refused.append("meta: wrong phone number id")
            return JSONResponse({"error": {"code": 100}}, status_code=400)
        data: Any = await request.json()
        if isinstance(data, dict) and data.get("type") == "template" and data.get("to"):
            return self._meta_template(data)
        ok = (
            isinstance(data, dict)
            and data.get("messaging_product") == "whatsapp"
            and data.get("type") == "text"
            and isinstance(data.get("text"), dict)
            and 0 < len(data["text"].get("body", "")) <= 4096
            and data.get("to")
        )
        if not ok:
            self.refused.append(f"meta: malformed {data}")
            return JSONResponse({"error": {"code": 100}}, status_code=400)
        self.sent.append(Sent("meta", data["to"], self.phone_number_id, data["text"]["body"]))
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": data["to"], "wa_id": data["to"]}],
                "messages": [{"id": "wamid." + secrets.token_hex(12)}],
            }
        )

    def start(self) -> None:
        """Serve in a background thread until stop()."""
        port = urlsplit(self.base_url).port or 80
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("provider stand-in did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def sent_to(self, to: str) -> list[Sent]:
        """Messages accepted for `to` so far."""
        return [s for s in self.sent if s.to == to]

    async def wait_for(
        self, to: str, count: int = 1, timeout_s: float = REPLY_WAIT_S
    ) -> list[Sent]:
        """Messages sent to `to`, once there are `count` of them (or the time is up)."""
        deadline = time.monotonic() + timeout_s
        while True:
            mine = self.sent_to(to)
            if len(mine) >= count or time.monotonic() > deadline:
                return mine
            await asyncio.sleep(0.2)
