"""The HTTP layer every service shares, on FastAPI.

How a service uses it (``shared.service.build_app`` does the first two steps for you):

1. ``install(app, max_body_bytes=...)`` adds the one error handler and the body limit.
2. ``app.include_router(ops_router(service))`` serves ``/metrics``, ``/livez`` and ``/readyz``.
3. The lifespan hands the routes their collaborators with ``provide(app, value)`` once they
   exist; a route asks for one with a dependency::

       Store = Annotated[CustomerStore, Depends(requires(CustomerStore))]

       @router.get("/v1/customers/{customer_id}")
       async def get_profile(customer_id: str, store: Store) -> Profile: ...

   Until the lifespan has provided it, every route that needs it answers 503 ``starting``
   (a WebSocket is closed with 1013, "try again later"): that decision lives here only.
4. Raise ``ApiError(status, error, message, details)`` anywhere in a route or dependency.

Every refusal has the same JSON body, ``{"error": <code>, "message": <sentence>, "details"?}``:
``ApiError``s, bad path or query parameters (400 ``invalid_<name>``), bad bodies (422
``invalid_request`` with a ``details`` list of ``{"field", "problem"}``), unknown routes
(404), wrong methods (405) and oversized bodies (413 ``too_large``). Document a route's
refusals with ``responses=error_responses(401, 404)``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, TypeVar, cast

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException, WebSocketException
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.status import WS_1013_TRY_AGAIN_LATER
from starlette.types import ASGIApp, Message, Receive, Scope, Send

S = TypeVar("S")

_STATE_ATTR = "cbd_provided"


class ApiError(Exception):
    """A request refused: the HTTP status, a machine-readable code and a sentence for people."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body every refusal has."""
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    def response(self) -> JSONResponse:
        """This refusal as a response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers or None)


class ErrorBody(BaseModel):
    """What every refusal looks like (for the OpenAPI document)."""

    error: str
    message: str
    details: Any = None


_DESCRIPTIONS = {
    400: "Bad parameter",
    401: "Missing or wrong credentials",
    403: "Not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Body too large",
    422: "Invalid body",
    429: "Rate limited",
    503: "Starting or a dependency is unavailable",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the refusals a route can answer."""
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS.get(status, "Refused")}
        for status in statuses
    }


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    503: "unavailable",
}


def validation_details(errors: Any) -> list[dict[str, str]]:
    """Pydantic's errors as field/problem pairs a client developer can act on."""
    details = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        details.append({"field": ".".join(loc) or "body", "problem": str(err.get("msg", ""))})
    return details


def validation_error(errors: Any, what: str = "request") -> ApiError:
    """The refusal for invalid input: 400 naming a bad parameter, else 422 naming each field."""
    for err in errors:
        loc = err.get("loc", ())
        if len(loc) >= 2 and loc[0] in ("path", "query", "header", "cookie"):
            name = str(loc[1]).replace("-", "_")
            return ApiError(400, f"invalid_{name}", f"{name}: {err.get('msg', 'invalid')}")
    details = validation_details(errors)
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:3])
    return ApiError(422, "invalid_request", f"invalid {what}: {summary}", details)


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_error(exc.errors()).response()


def _translated(refusal: Refusal) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(_: Request, exc: Exception) -> Response:
        return refusal(exc).response()

    return handler


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return ApiError(exc.status_code, code, message, headers=exc.headers).response()


Refusal = Callable[[Exception], ApiError]
"""How a domain exception reads over HTTP (e.g. a desk's TicketNotFound as a 404)."""


def install(
    app: FastAPI, *, max_body_bytes: int, refusals: Mapping[type[Exception], Refusal] | None = None
) -> None:
    """Give `app` the shared error handling and body limit.

    `refusals` turn a domain module's exceptions into `ApiError`s, so domain code raises its
    own exceptions and never imports the HTTP layer.
    """
    app.add_exception_handler(ApiError, _api_error)
    for kind, refusal in (refusals or {}).items():
        app.add_exception_handler(kind, _translated(refusal))
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body streams past the limit; answered as 413 too_large."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is limited to {limit} bytes")


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, without reading them whole.

    A declared `Content-Length` over the limit is refused before the app runs; a chunked body
    is counted as it streams in and refused at the first chunk that passes the limit. (Starlette
    has a body-limit middleware too, but it answers in plain text, not in the platform's error
    shape.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass `scope` on with a receive that counts the body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:
            # The exception handler normally answers this; an app without one lands here.
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = ApiError(413, "too_large", f"the body is limited to {self.max_bytes} bytes")
        await error.response()(scope, receive, send)


def provide(app: FastAPI, value: object, *, as_: type[Any] | None = None) -> None:
    """Make `value` available to routes as `requires(type(value))` (or `requires(as_)`)."""
    registry: dict[type[Any], object] | None = getattr(app.state, _STATE_ATTR, None)
    if registry is None:
        registry = {}
        setattr(app.state, _STATE_ATTR, registry)
    registry[as_ or type(value)] = value


def withdraw(app: FastAPI, kinds: Iterable[type[Any]] | None = None) -> None:
    """Forget what was provided as `kinds` (everything when None); routes answer 503 again."""
    registry: dict[type[Any], object] = getattr(app.state, _STATE_ATTR, None) or {}
    for kind in list(registry) if kinds is None else kinds:
        registry.pop(kind, None)


def provided(app: Any, kind: type[S]) -> S | None:
    """What was provided as `kind`, or None while the service is starting."""
    registry: dict[type[Any], object] = getattr(app.state, _STATE_ATTR, None) or {}
    # Not an isinstance check: tests may provide a stand-in as the real type.
    return cast("S | None", registry.get(kind))


@functools.cache
def requires(kind: type[S]) -> Callable[[HTTPConnection], S]:
    """A dependency on what the lifespan provided as `kind`: 503 `starting` until it has.

    The same callable comes back for the same `kind`, so tests can override it with
    ``app.dependency_overrides[requires(Kind)] = ...``.
    """

    def dependency(conn: HTTPConnection) -> S:
        value = provided(conn.app, kind)
        if value is None:
            if conn.scope["type"] == "websocket":
                raise WebSocketException(WS_1013_TRY_AGAIN_LATER, "the service is starting")
            raise ApiError(503, "starting", "the service is starting; try again shortly")
        return value

    dependency.__name__ = f"requires_{kind.__name__}"
    return dependency


@dataclass(frozen=True)
class Readiness:
    """How `/readyz` checks the service's dependencies: 'ok' or a short reason per name."""

    check: Callable[[], Awaitable[dict[str, str]]]


class Liveness(BaseModel):
    """Body of /livez."""

    status: str
    service: str


class ReadinessReport(BaseModel):
    """Body of /readyz."""

    status: str
    checks: dict[str, str] = {}


def ops_router(service: str, *, with_metrics: bool = True) -> APIRouter:
    """`/livez` (checks nothing external), `/readyz` (the provided `Readiness`), `/metrics`.

    Without `with_metrics` the main port serves no /metrics (they are on a port of their own).
    """
    router = APIRouter(tags=["operations"])

    @router.get("/livez", summary="Liveness: the process answers")
    async def livez() -> Liveness:
        """Answers while the process runs; checks nothing external."""
        return Liveness(status="alive", service=service)

    @router.get(
        "/readyz",
        summary="Readiness: broker, database and cache answer",
        responses={503: {"model": ReadinessReport, "description": "Starting or not ready"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        """200 when every dependency answers within its budget, else 503 naming the failures."""
        readiness = provided(request.app, Readiness)
        if readiness is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        checks = await readiness.check()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "unready", "checks": checks},
            status_code=200 if ok else 503,
        )

    if not with_metrics:
        return router

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Metrics"}},
    )
    async def metrics() -> Response:
        """The process's Prometheus metrics in the text exposition format."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def undocumented_routes(app: FastAPI) -> list[str]:
    """Routes missing from the app's generated OpenAPI document (tests assert it is empty).

    WebSocket routes and routes excluded on purpose (`include_in_schema=False`) are skipped;
    every other route must appear with each of its methods, a description (the endpoint's
    docstring) and a documented successful response.
    """
    paths = app.openapi().get("paths", {})
    missing = []
    for route in app.routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is None:
                missing.append(f"{method} {route.path_format}: not in the document")
            elif not operation.get("description"):
                missing.append(f"{method} {route.path_format}: no description")
            elif not any(str(code).startswith("2") for code in operation.get("responses", {})):
                missing.append(f"{method} {route.path_format}: no success response")
    return missing


class _InlineCode(HTMLParser):
    """Collects the text of inline <script> (those without `src`) and <style> elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._open: list[str] | None = None
        self._parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and not any(name == "src" for name, _ in attrs):
            self._open, self._parts = self.scripts, []
        elif tag == "style":
            self._open, self._parts = self.styles, []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag in ("script", "style"):
            self._open.append("".join(self._parts))
            self._open = None


def _source_hashes(blocks: list[str]) -> str:
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
        for b in dict.fromkeys(blocks)
    )


@functools.lru_cache(maxsize=64)
def content_security_policy(html: str) -> str:
    """The Content-Security-Policy for one of our pages: its own inline code by hash, no more.

    Inline <script> and <style> blocks are allowed by their SHA-256 (CSP Level 2 hashes), so
    the policy needs no 'unsafe-inline': injected markup (a customer's text rendered by a
    bug) cannot run script or restyle the page. Style attributes are not allowed either
    (the pages set styles through the CSSOM, which CSP does not restrict). Framing is refused
    (`frame-ancestors 'none'`): the console and review pages carry people's data, and the
    customer chat is embedded with the widget script, never in a frame.
    """
    parser = _InlineCode()
    parser.feed(html)
    parser.close()
    scripts = " ".join(filter(None, ["'self'", _source_hashes(parser.scripts)]))
    styles = " ".join(filter(None, ["'self'", _source_hashes(parser.styles)]))
    return (
        f"default-src 'self'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def html_page(html: str, *, cache_control: str = "no-store") -> HTMLResponse:
    """An HTML page with the security headers every page of ours carries.

    The apps send them themselves, so a page is as strict behind any ingress (or none, as
    with `make run`) as behind the Kubernetes one.
    """
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": content_security_policy(html),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "strict-origin-when-cross-origin",
            "Cache-Control": cache_control,
        },
    )
