"""Unit tests for the streaming OpenAI-compatible client, against a small local fake server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from services.generation.breaker import BreakerState, CircuitBreaker
from services.memory.extraction import LlmExtractor
from shared.llm import ChatClient, ChatMessage, LLMUnavailable, StreamEnd, _parse_sse_line

PIECES = ["Hello", ",", " I'm", " sorry", " to hear that."]
FIRST_TOKEN_TIMEOUT_S = 0.3
STALL_S = 3.0
"""Far beyond the first-token budget; the client gives up long before."""


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def chunk(content: str | None = None, *, role: str | None = None) -> str:
    delta: dict[str, str] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return sse({"id": "c1", "object": "chat.completion.chunk", "choices": [{"delta": delta}]})


# --- _parse_sse_line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('data: {"choices":[{"delta":{"content":"Hi"}}]}', ("Hi", False)),
        ('data:{"choices":[{"delta":{"content":" there"}}]}', (" there", False)),
        ('data: {"choices":[{"delta":{"role":"assistant"}}]}', ("", False)),
        ('data: {"choices":[{"delta":{"role":"assistant","content":""}}]}', ("", False)),
        ('data: {"choices":[{"delta":{"content":null}}]}', ("", False)),
        ('data: {"choices":[{"delta":{"content":5}}]}', ("", False)),
        ('data: {"choices":[{"finish_reason":"stop"}]}', ("", False)),
        ("data: [DONE]", ("", True)),
        ("data:[DONE]", ("", True)),
        ("data:  [DONE]  ", ("", True)),
        ("", ("", False)),
        (": keep-alive comment", ("", False)),
        ("event: message", ("", False)),
        ("id: 3", ("", False)),
        ('  data: {"choices":[{"delta":{"content":"x"}}]}', ("", False)),
        ("data: {not json", ("", False)),
        ("data: ", ("", False)),
        ('data: {"choices":[]}', ("", False)),
        ('data: {"choices":null}', ("", False)),
        ('data: {"object":"chat.completion.chunk"}', ("", False)),
    ],
)
def test_parse_sse_line(line: str, expected: tuple[str, bool]) -> None:
    parsed = _parse_sse_line(line)
    assert (parsed.text, parsed.done) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('data: {"choices":[{"delta":{},"finish_reason":"length"}]}', "length"),
        ('data: {"choices":[{"delta":{"content":"."},"finish_reason":"stop"}]}', "stop"),
        ('data: {"choices":[{"delta":{"content":"x"},"finish_reason":null}]}', None),
        ('data: {"choices":[{"finish_reason":7}]}', None),
        ("data: [DONE]", None),
    ],
)
def test_parse_sse_line_reads_the_finish_reason(line: str, reason: str | None) -> None:
    assert _parse_sse_line(line).finish_reason == reason


@pytest.mark.parametrize(
    "line",
    ["data: []", 'data: "text"', "data: 5", 'data: {"choices":[null]}', 'data: {"choices":[1]}'],
)
def test_parse_sse_line_tolerates_valid_json_of_the_wrong_shape(line: str) -> None:
    assert _parse_sse_line(line) == ("", False, None)


# --- the fake server ------------------------------------------------------------------------


class FakeLLM:
    """Routes under different base paths, each behaving differently at /chat/completions."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.flaky_calls = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/ok/chat/completions", self.ok, methods=["POST"]),
                Route("/cut/chat/completions", self.cut, methods=["POST"]),
                Route("/slow/chat/completions", self.slow, methods=["POST"]),
                Route("/stall/chat/completions", self.stall, methods=["POST"]),
                Route("/drip/chat/completions", self.drip, methods=["POST"]),
                Route("/nodone/chat/completions", self.nodone, methods=["POST"]),
                Route("/afterdone/chat/completions", self.afterdone, methods=["POST"]),
                Route("/error/chat/completions", self.error, methods=["POST"]),
                Route("/wrongshape/chat/completions", self.wrongshape, methods=["POST"]),
                Route("/flaky/chat/completions", self.flaky, methods=["POST"]),
                Route("/busy/chat/completions", self.busy, methods=["POST"]),
                Route("/badreq/chat/completions", self.badreq, methods=["POST"]),
                Route("/whole/chat/completions", self.whole, methods=["POST"]),
                Route("/notjson/chat/completions", self.notjson, methods=["POST"]),
                Route("/nocontent/chat/completions", self.nocontent, methods=["POST"]),
            ]
        )

    async def _record(self, request: Request) -> None:
        self.requests.append(await request.json())
        self.auth.append(request.headers.get("authorization"))

    async def whole(self, request: Request) -> Response:
        """A non-streamed completion, as `complete` asks for."""
        await self._record(request)
        message = {"role": "assistant", "content": "".join(PIECES)}
        return JSONResponse({"object": "chat.completion", "choices": [{"message": message}]})

    async def notjson(self, request: Request) -> Response:
        await self._record(request)
        return Response("<html>proxy error</html>", media_type="text/html")

    async def nocontent(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"choices": [{"text": "a completions-API answer"}]})

    @staticmethod
    def _stream(body: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(body, media_type="text/event-stream")

    async def ok(self, request: Request) -> Response:
        await self._record(request)

        async def body() -> AsyncIterator[str]:
            yield chunk(role="assistant")
            yield ": a comment line\n\n"
            for piece in PIECES:
                yield chunk(piece)
            yield sse({"choices": [{"delta": {}, "finish_reason": "stop"}]})
            yield "data: [DONE]\n\n"

        return self._stream(body())

    async def cut(self, request: Request) -> Response:
        """Stopped at the token limit, as vLLM and llama.cpp say it: `finish_reason` length."""
        await self._record(request)

        async def body() -> AsyncIterator[str]:
            yield chunk("Here is what I found:\n\n1. **")
            yield sse({"choices": [{"delta": {}, "finish_reason": "length"}]})
            yield "data: [DONE]\n\n"

        return self._stream(body())

    async def slow(self, request: Request) -> Response:
        await self._record(request)

        async def body() -> AsyncIterator[str]:
            await asyncio.sleep(STALL_S)
            yield chunk("too late")
            yield "data: [DONE]\n\n"

        return self._stream(body())

    async def stall(self, request: Request) -> Response:
        await self._record(request)

        async def body() -> AsyncIterator[str]:
            yield chunk("Hello")
            await asyncio.sleep(STALL_S)
            yield chunk(" too late")
            yield "data: [DONE]\n\n"

        return self._stream(body())

    async def drip(self, request: Request) -> Response:
        await self._record(request)

        async def body() -> AsyncIterator[str]:
            for _ in range(100):
                yield chunk(".")
                await asyncio.sleep(0.05)
            yield "data: [DONE]\n\n"

        return self._stream(body())

    async def nodone(self, request: Request) -> Response:
        await self._record(request)

        async def body() -> AsyncIterator[str]:
            yield chunk("short")
            yield chunk(" reply")

        return self._stream(body())

    async def afterdone(self, request: Request) -> Response:
        await self._record(request)

        async def body() -> AsyncIterator[str]:
            yield chunk("kept")
            yield "data: [DONE]\n\n"
            yield chunk("ignored")

        return self._stream(body())

    async def error(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"error": "model exploded"}, status_code=500)

    async def flaky(self, request: Request) -> Response:
        """Fails every other request with a 503, as a restarting server behind a proxy does."""
        await self._record(request)
        self.flaky_calls += 1
        if self.flaky_calls % 2 == 1:
            return JSONResponse({"error": "starting"}, status_code=503)
        return await self.ok(request)

    async def busy(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"error": "overloaded"}, status_code=503)

    async def badreq(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"error": "prompt too long"}, status_code=400)

    async def wrongshape(self, request: Request) -> Response:
        await self._record(request)

        async def body() -> AsyncIterator[str]:
            yield sse(["not", "an", "object"])
            yield chunk("fine")
            yield "data: [DONE]\n\n"

        return self._stream(body())


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


@pytest.fixture(scope="module")
def fake() -> FakeLLM:
    return FakeLLM()


@pytest.fixture(scope="module")
async def server_url(fake: FakeLLM) -> AsyncIterator[str]:
    sock = _listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app(),
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "the fake LLM server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


MESSAGES = [ChatMessage("system", "be kind"), ChatMessage("user", "<customer>hi</customer>")]


async def collect(client: ChatClient, into: list[str] | None = None) -> list[str]:
    """Every piece the client streams (also appended to `into`, kept if it raises)."""
    received = [] if into is None else into
    try:
        async for piece in client.stream(MESSAGES, max_tokens=32, temperature=0.2, top_p=0.9):
            received.append(piece)
    finally:
        await client.aclose()
    return received


def client_for(base_url: str, **kwargs: Any) -> ChatClient:
    kwargs.setdefault("first_token_timeout_s", FIRST_TOKEN_TIMEOUT_S)
    return ChatClient(base_url, "fake-model", **kwargs)


# --- ChatClient -----------------------------------------------------------------------------


async def test_streams_pieces_in_order(server_url: str, fake: FakeLLM) -> None:
    pieces = await collect(client_for(server_url + "/ok/", api_key="k"))

    assert pieces == PIECES
    request = fake.requests[-1]
    assert request["model"] == "fake-model"
    assert request["stream"] is True
    assert request["max_tokens"] == 32
    assert request["temperature"] == 0.2
    assert request["top_p"] == 0.9
    assert request["messages"] == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "<customer>hi</customer>"},
    ]


@pytest.mark.parametrize(("route", "reason"), [("/ok", "stop"), ("/cut", "length")])
async def test_the_stream_tells_its_caller_how_it_ended(
    server_url: str, route: str, reason: str
) -> None:
    client = client_for(server_url + route)
    end = StreamEnd()
    try:
        pieces = [
            p async for p in client.stream(MESSAGES, max_tokens=8, temperature=0, top_p=1, end=end)
        ]
    finally:
        await client.aclose()
    assert pieces
    assert end.finish_reason == reason
    assert end.cut is (reason == "length")


async def test_stream_ending_without_done_still_returns_what_came(server_url: str) -> None:
    assert await collect(client_for(server_url + "/nodone")) == ["short", " reply"]


async def test_nothing_after_done_is_yielded(server_url: str) -> None:
    assert await collect(client_for(server_url + "/afterdone")) == ["kept"]


async def test_no_first_token_in_time_is_unavailable(server_url: str) -> None:
    with pytest.raises(LLMUnavailable) as caught:
        await collect(client_for(server_url + "/slow"))

    assert caught.value.kind == "first_token_timeout"


async def test_stall_after_first_token_is_a_timeout(server_url: str) -> None:
    received: list[str] = []
    with pytest.raises(LLMUnavailable) as caught:
        await collect(client_for(server_url + "/stall"), received)

    assert received == ["Hello"]
    assert caught.value.kind == "timeout"


async def test_total_budget_bounds_a_dripping_stream(server_url: str) -> None:
    received: list[str] = []
    with pytest.raises(LLMUnavailable) as caught:
        await collect(client_for(server_url + "/drip", total_timeout_s=0.4), received)

    assert caught.value.kind == "timeout"
    assert received
    assert len(received) < 100


async def test_http_error_is_unavailable_with_status(server_url: str) -> None:
    with pytest.raises(LLMUnavailable) as caught:
        await collect(client_for(server_url + "/error"))

    assert caught.value.kind == "http_500"
    assert "model exploded" in str(caught.value)


async def test_unknown_path_is_unavailable_with_404(server_url: str) -> None:
    with pytest.raises(LLMUnavailable) as caught:
        await collect(client_for(server_url + "/nowhere"))

    assert caught.value.kind == "http_404"


async def test_closed_port_is_a_connection_failure() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.

    with pytest.raises(LLMUnavailable) as caught:
        await collect(client_for(f"http://127.0.0.1:{port}/v1"))

    assert caught.value.kind == "connection"


async def test_wrong_shape_chunk_is_skipped(server_url: str) -> None:
    pieces = await collect(client_for(server_url + "/wrongshape"))
    assert pieces == ["fine"]


# --- retries and the circuit breaker ----------------------------------------------------------


async def test_a_503_before_any_text_is_retried(server_url: str, fake: FakeLLM) -> None:
    before = fake.flaky_calls
    pieces = await collect(client_for(server_url + "/flaky", retries=1, retry_backoff_s=0.01))

    assert pieces == PIECES
    assert fake.flaky_calls - before == 2


async def test_retries_are_bounded(server_url: str, fake: FakeLLM) -> None:
    before = len(fake.requests)
    with pytest.raises(LLMUnavailable) as caught:
        await collect(client_for(server_url + "/busy", retries=2, retry_backoff_s=0.01))

    assert caught.value.kind == "http_503"
    assert len(fake.requests) - before == 3


async def test_a_client_error_is_not_retried(server_url: str, fake: FakeLLM) -> None:
    before = len(fake.requests)
    with pytest.raises(LLMUnavailable) as caught:
        await collect(client_for(server_url + "/badreq", retries=3, retry_backoff_s=0.01))

    assert caught.value.kind == "http_400"
    assert len(fake.requests) - before == 1


async def test_a_stall_after_text_is_never_retried(server_url: str, fake: FakeLLM) -> None:
    before = len(fake.requests)
    with pytest.raises(LLMUnavailable):
        await collect(client_for(server_url + "/stall", retries=3, retry_backoff_s=0.01))

    assert len(fake.requests) - before == 1


async def test_the_breaker_opens_and_then_fails_without_calling(
    server_url: str, fake: FakeLLM
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=60)
    for _ in range(2):
        with pytest.raises(LLMUnavailable):
            await collect(client_for(server_url + "/busy", breaker=breaker))
    assert breaker.state == BreakerState.OPEN

    before = len(fake.requests)
    with pytest.raises(LLMUnavailable) as caught:
        await collect(client_for(server_url + "/ok", breaker=breaker))

    assert caught.value.kind == "circuit_open"
    assert len(fake.requests) == before


async def test_client_errors_do_not_open_the_breaker(server_url: str) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=60)
    with pytest.raises(LLMUnavailable):
        await collect(client_for(server_url + "/badreq", breaker=breaker))
    assert breaker.state == BreakerState.CLOSED


async def test_a_successful_trial_closes_the_breaker(server_url: str) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=0.05)
    with pytest.raises(LLMUnavailable):
        await collect(client_for(server_url + "/busy", breaker=breaker))
    await asyncio.sleep(0.06)

    assert await collect(client_for(server_url + "/ok", breaker=breaker)) == PIECES
    assert breaker.state == BreakerState.CLOSED


async def test_stopping_early_counts_as_a_healthy_server(server_url: str) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=0.05)
    breaker.record_failure()
    await asyncio.sleep(0.06)
    client = client_for(server_url + "/ok", breaker=breaker)
    try:
        stream = client.stream(MESSAGES, max_tokens=8, temperature=0.0, top_p=1.0)
        assert await anext(stream) == PIECES[0]
        await stream.aclose()
    finally:
        await client.aclose()

    assert breaker.state == BreakerState.CLOSED


# --- auth and whole completions (memory's extractor) -------------------------------------------


async def test_the_api_key_is_sent_as_a_bearer_token_and_only_when_set(
    server_url: str, fake: FakeLLM
) -> None:
    await collect(client_for(server_url + "/ok", api_key="secret-key"))
    assert fake.auth[-1] == "Bearer secret-key"

    await collect(client_for(server_url + "/ok"))
    assert fake.auth[-1] is None


async def complete(client: ChatClient) -> str:
    try:
        return await client.complete(MESSAGES, max_tokens=16, temperature=0)
    finally:
        await client.aclose()


async def test_complete_returns_the_whole_answer(server_url: str, fake: FakeLLM) -> None:
    assert await complete(client_for(server_url + "/whole", api_key="k")) == "".join(PIECES)

    request = fake.requests[-1]
    assert "stream" not in request
    assert "top_p" not in request
    assert request["max_tokens"] == 16
    assert request["temperature"] == 0
    assert fake.auth[-1] == "Bearer k"


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/error", "http_500"), ("/notjson", "bad_response"), ("/nocontent", "bad_response")],
)
async def test_complete_fails_with_a_kind_on_an_unusable_answer(
    server_url: str, path: str, kind: str
) -> None:
    with pytest.raises(LLMUnavailable) as caught:
        await complete(client_for(server_url + path))
    assert caught.value.kind == kind


async def test_complete_is_bounded_by_the_total_budget(server_url: str) -> None:
    with pytest.raises(LLMUnavailable) as caught:
        # /slow answers only after STALL_S; the first-token budget does not apply to a
        # whole answer, the total one does.
        await complete(
            client_for(server_url + "/slow", first_token_timeout_s=30, total_timeout_s=0.3)
        )
    assert caught.value.kind == "timeout"


async def test_complete_retries_a_503_and_reports_to_the_breaker(
    server_url: str, fake: FakeLLM
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=60)
    before = len(fake.requests)
    with pytest.raises(LLMUnavailable) as caught:
        await complete(
            client_for(server_url + "/busy", retries=1, retry_backoff_s=0.01, breaker=breaker)
        )
    assert caught.value.kind == "http_503"
    assert len(fake.requests) - before == 2
    assert breaker.state == BreakerState.OPEN


async def test_the_memory_extractor_asks_through_the_shared_client(
    server_url: str, fake: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    llm = client_for(server_url + "/error")
    try:
        assert await LlmExtractor(llm).extract("I'm vegan") == []
    finally:
        await llm.aclose()
    assert "LLM extractor unavailable: http_500" in caplog.text
    request = fake.requests[-1]
    assert request["model"] == "fake-model"
    assert request["messages"][0]["role"] == "system"
    assert "I'm vegan" in request["messages"][1]["content"]
