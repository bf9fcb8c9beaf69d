"""The one client for OpenAI-compatible chat completion servers (vLLM, llama.cpp).

Generation streams replies through it (`ChatClient.stream`: separate budgets for connecting,
the first token and the whole reply, retries before any text, an optional circuit breaker);
memory asks it for one complete answer (`ChatClient.complete`). Both get the same auth
header, timeouts and error type (`LLMUnavailable`, whose `kind` says how a request failed).
What a service does with the text (prompts, fallbacks, parsing) stays in the service.

A thin httpx client rather than the official `openai` package: the reference client fails a
whole reply on one malformed chunk where this one skips it; with no key configured it reads
`OPENAI_API_KEY` from the environment (a self-hosted server would receive a key meant for
someone else) and needs a placeholder key or an omitted header to send none; and it adds
0.8 s of import and 18 MB to each process that uses it. What it offers beyond this (typed
responses, its own retry schedule) this platform does not use.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import httpx
from prometheus_client import Counter, Histogram

from shared.metrics import LATENCY_BUCKETS

# The streaming path's metrics (generation's replies, which the LLM dashboards chart); a
# `complete` call records none, so another service's use does not skew tokens per second.
LLM_TTFT = Histogram(
    "cbd_llm_time_to_first_token_seconds",
    "Time from request to first streamed token.",
    buckets=LATENCY_BUCKETS,
)
LLM_DURATION = Histogram(
    "cbd_llm_request_seconds", "Time for a whole streamed completion.", buckets=LATENCY_BUCKETS
)
LLM_TOKENS = Counter("cbd_llm_completion_tokens_total", "Streamed completion chunks received.")
LLM_ERRORS = Counter("cbd_llm_errors_total", "LLM requests that failed, by kind.", ["kind"])
LLM_RETRIES = Counter("cbd_llm_retries_total", "LLM requests retried before any text came.")

# Failures worth another attempt: the server refused, was overloaded or broke, before any
# text came. A first-token timeout is not retried: its budget is the customer's wait.
RETRYABLE = frozenset({"connection", "http_429", "http_500", "http_502", "http_503", "http_504"})


@dataclass
class StreamEnd:
    """How a streamed reply ended, filled in by `ChatClient.stream` for its caller.

    The text alone cannot tell a reply that ended from one the server cut at `max_tokens`
    (which stops mid-sentence, even mid-word or inside markup).
    """

    finish_reason: str | None = None
    """The server's last `finish_reason`: `stop`, `length` (cut at the token limit)..."""

    @property
    def cut(self) -> bool:
        """The server stopped the reply at the token limit, not where the model ended it."""
        return self.finish_reason == "length"


class LLMUnavailable(Exception):
    """The LLM could not produce a reply in time; `kind` says how it failed."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind

    @property
    def server_fault(self) -> bool:
        """Whether this says the server is unhealthy (counts towards opening the breaker).

        A 4xx other than 429 is our request's fault (too long a prompt, a wrong model name):
        opening the breaker for it would turn one bad request into an outage.
        """
        return not (self.kind.startswith("http_4") and self.kind != "http_429")


class Breaker(Protocol):
    """What the client needs of a circuit breaker (generation's `CircuitBreaker` is one)."""

    def allow(self) -> bool:
        """Whether a request may go to the server now."""
        ...

    def record_success(self) -> None:
        """The server answered."""
        ...

    def record_failure(self) -> None:
        """The server failed a request."""
        ...

    def release_trial(self) -> None:
        """A trial request ended without a verdict on the server."""
        ...


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat completion request."""

    role: str
    content: str


class ChatClient:
    """Chat completions, streamed or whole, with budgets for connecting, first token and total.

    Created in a service's lifespan and closed with it (`aclose`).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        connect_timeout_s: float = 2.0,
        first_token_timeout_s: float = 8.0,
        total_timeout_s: float = 30.0,
        retries: int = 0,
        retry_backoff_s: float = 0.2,
        breaker: Breaker | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.first_token_timeout_s = first_token_timeout_s
        self.total_timeout_s = total_timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.breaker = breaker
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            # A read may wait at most the first-token budget: headers and every chunk after
            # them arrive within it on a healthy server, whatever the reply's length.
            timeout=httpx.Timeout(
                first_token_timeout_s, connect=connect_timeout_s, write=5.0, pool=5.0
            ),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        end: StreamEnd | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield the reply's text as it is generated; raise LLMUnavailable on failure.

        `end`, when given, receives the server's finish reason once the stream is over.

        A request that fails before any text is retried (`retries` times, with backoff)
        while the first-token budget lasts; once text has streamed it is never retried, since
        the customer has seen it. The circuit breaker, when given, fails requests at once while
        the server is known to be down.
        """
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            LLM_ERRORS.labels("circuit_open").inc()
            raise LLMUnavailable("circuit_open", "the LLM server failed repeatedly; waiting")
        verdict = _BreakerVerdict(breaker)
        try:
            async with aclosing(
                self._with_retries(messages, max_tokens, temperature, top_p, end)
            ) as it:
                async for text in it:
                    yield text
            verdict.success()
        except LLMUnavailable as exc:
            verdict.failure(exc)
            raise
        except GeneratorExit:
            # The caller stopped reading (a guardrail ended the reply): the server was
            # answering, so it is healthy.
            verdict.success()
            raise
        finally:
            verdict.undecided()

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float | None = None,
    ) -> str:
        """The whole reply's text from one non-streamed request; raise LLMUnavailable on failure.

        The answer must arrive within the total budget (retries and their backoff included);
        refusals and server errors are retried like a stream's, and the breaker, when given,
        is consulted and told the outcome.
        """
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            raise LLMUnavailable("circuit_open", "the LLM server failed repeatedly; waiting")
        verdict = _BreakerVerdict(breaker)
        body = self._body(messages, max_tokens, temperature)
        if top_p is not None:
            body["top_p"] = top_p
        give_up_at = time.perf_counter() + self.total_timeout_s
        attempt = 0
        try:
            while True:
                try:
                    text = await self._complete_once(body, give_up_at)
                except LLMUnavailable as exc:
                    backoff = self.retry_backoff_s * 2**attempt
                    if (
                        exc.kind not in RETRYABLE
                        or attempt >= self.retries
                        or time.perf_counter() + backoff >= give_up_at
                    ):
                        raise
                    attempt += 1
                    await asyncio.sleep(backoff)
                    continue
                verdict.success()
                return text
        except LLMUnavailable as exc:
            verdict.failure(exc)
            raise
        finally:
            verdict.undecided()

    async def choose_tools(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[dict[str, Any]],
        *,
        max_tokens: int = 200,
    ) -> list[ToolCall]:
        """The function calls the model asks for (OpenAI `tools`, `tool_choice: auto`).

        One non-streamed request within the total budget, no retries: the caller has a
        deterministic way to choose and falls back to it. Raises LLMUnavailable when the server
        fails, answers without a message, or does not take `tools` (an HTTP 4xx).
        """
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            raise LLMUnavailable("circuit_open", "the LLM server failed repeatedly; waiting")
        # Told the outcome like any request: a half-open breaker's trial is never left taken.
        verdict = _BreakerVerdict(breaker)
        body = self._body(messages, max_tokens, 0, tools=list(tools), tool_choice="auto")
        try:
            calls = _tool_calls(await self._post(body, time.perf_counter() + self.total_timeout_s))
            verdict.success()
            return calls
        except LLMUnavailable as exc:
            verdict.failure(exc)
            raise
        finally:
            verdict.undecided()

    def _body(
        self, messages: Sequence[ChatMessage], max_tokens: int, temperature: float, **extra: Any
    ) -> dict[str, Any]:
        """A chat completion request's JSON body."""
        return {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            **extra,
        }

    async def _complete_once(self, body: dict[str, Any], give_up_at: float) -> str:
        return _completion_text(await self._post(body, give_up_at))

    async def _post(self, body: dict[str, Any], give_up_at: float) -> httpx.Response:
        remaining = give_up_at - time.perf_counter()
        try:
            async with asyncio.timeout(remaining):
                # A whole answer comes only once every token is generated: reads may take the
                # total budget, not the first-token one.
                resp = await self._http.post(
                    "/chat/completions", json=body, timeout=httpx.Timeout(remaining)
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise LLMUnavailable("timeout", "the LLM did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise LLMUnavailable("connection", repr(exc)) from exc
        if resp.status_code != 200:
            raise LLMUnavailable(f"http_{resp.status_code}", resp.text[:300])
        return resp

    async def _with_retries(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int,
        temperature: float,
        top_p: float,
        end: StreamEnd | None,
    ) -> AsyncGenerator[str, None]:
        give_up_at = time.perf_counter() + self.first_token_timeout_s
        attempt = 0
        while True:
            streamed = False
            try:
                async with aclosing(
                    self._stream_once(
                        messages,
                        max_tokens=max_tokens,
                        temperature=temperature,
                        top_p=top_p,
                        end=end,
                    )
                ) as it:
                    async for text in it:
                        streamed = True
                        yield text
                return
            except LLMUnavailable as exc:
                backoff = self.retry_backoff_s * 2**attempt
                if (
                    streamed
                    or exc.kind not in RETRYABLE
                    or attempt >= self.retries
                    or time.perf_counter() + backoff >= give_up_at
                ):
                    raise
                attempt += 1
                LLM_RETRIES.inc()
                await asyncio.sleep(backoff)

    async def _stream_once(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        end: StreamEnd | None = None,
    ) -> AsyncGenerator[str, None]:
        """One streamed request, without retries."""
        body = self._body(messages, max_tokens, temperature, top_p=top_p, stream=True)
        started = time.perf_counter()
        deadline = started + self.total_timeout_s
        first = True
        try:
            async with self._http.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread()).decode(errors="replace")[:300]
                    raise LLMUnavailable(f"http_{resp.status_code}", detail)
                lines = resp.aiter_lines()
                while True:
                    # The deadline is checked per line rather than with a scope around the
                    # loop, because a cancel scope must not span this generator's yields.
                    # Not `asyncio.wait_for` either: on Python 3.11 it swallows a
                    # cancellation that arrives as a buffered line is read at once.
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        raise TimeoutError
                    try:
                        async with asyncio.timeout(remaining):
                            line = await anext(lines)
                    except StopAsyncIteration:
                        break
                    text, done, finish_reason = _parse_sse_line(line)
                    if done:
                        break
                    if finish_reason is not None and end is not None:
                        end.finish_reason = finish_reason
                    if text:
                        if first:
                            LLM_TTFT.observe(time.perf_counter() - started)
                            first = False
                        LLM_TOKENS.inc()
                        yield text
        except LLMUnavailable as exc:
            LLM_ERRORS.labels(exc.kind).inc()
            raise
        except (TimeoutError, httpx.TimeoutException) as exc:
            kind = "first_token_timeout" if first else "timeout"
            LLM_ERRORS.labels(kind).inc()
            raise LLMUnavailable(kind, "the LLM did not answer in time") from exc
        except httpx.HTTPError as exc:
            LLM_ERRORS.labels("connection").inc()
            raise LLMUnavailable("connection", repr(exc)) from exc
        LLM_DURATION.observe(time.perf_counter() - started)


class _BreakerVerdict:
    """Reports one request's outcome to the breaker exactly once."""

    def __init__(self, breaker: Breaker | None) -> None:
        self.breaker = breaker
        self.decided = breaker is None

    def success(self) -> None:
        """The server answered."""
        if not self.decided and self.breaker is not None:
            self.decided = True
            self.breaker.record_success()

    def failure(self, exc: LLMUnavailable) -> None:
        """The request failed; only the server's own faults count against it."""
        if not self.decided and self.breaker is not None:
            self.decided = True
            if exc.server_fault:
                self.breaker.record_failure()
            else:
                self.breaker.release_trial()

    def undecided(self) -> None:
        """No verdict (cancelled mid-request)."""
        # Cancelled mid-request: no verdict on the server; a half-open trial may go again.
        if not self.decided and self.breaker is not None:
            self.decided = True
            self.breaker.release_trial()


class SseLine(NamedTuple):
    """What one server-sent-events line says."""

    text: str
    done: bool
    """`[DONE]`: the stream is over."""
    finish_reason: str | None = None


def _parse_sse_line(line: str) -> SseLine:
    """The text in one server-sent-events line, whether the stream has ended, and the
    finish reason when the chunk carries one.

    Anything that is not a well-formed chunk carries no text: a server that sends keep-alive
    comments or odd JSON must not turn into an exception in the middle of a reply.
    """
    if not line.startswith("data:"):
        return SseLine("", False)
    data = line[5:].strip()
    if data == "[DONE]":
        return SseLine("", True)
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        return SseLine("", False)
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return SseLine("", False)
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    reason = choices[0].get("finish_reason")
    return SseLine(
        content if isinstance(content, str) else "",
        False,
        reason if isinstance(reason, str) else None,
    )


@dataclass(frozen=True)
class ToolCall:
    """One function call a model asked for: the function's name and its string arguments."""

    name: str
    arguments: dict[str, str]


def _tool_calls(resp: httpx.Response) -> list[ToolCall]:
    """The tool calls of a non-streamed completion (none when the model answered in text).

    Arguments arrive as a JSON string the model wrote: a call whose arguments are not a JSON
    object of scalars is left out, never guessed at.
    """
    try:
        data = resp.json()
    except (ValueError, RecursionError) as exc:
        raise LLMUnavailable("bad_response", "the answer is not JSON") from exc
    choices = data.get("choices") if isinstance(data, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise LLMUnavailable("bad_response", "the answer has no choices[0].message")
    calls: list[ToolCall] = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        try:
            raw = json.loads(function.get("arguments") or "{}")
        except (ValueError, RecursionError):
            continue
        if not isinstance(raw, dict) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in raw.values()
        ):
            continue
        calls.append(ToolCall(function["name"], {str(k): str(v) for k, v in raw.items()}))
    return calls


def _completion_text(resp: httpx.Response) -> str:
    """The message text of a non-streamed completion; LLMUnavailable if it has none."""
    try:
        data = resp.json()
    except (ValueError, RecursionError) as exc:
        raise LLMUnavailable("bad_response", "the answer is not JSON") from exc
    choices = data.get("choices") if isinstance(data, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if content is None and isinstance(message, dict) and "content" in message:
        return ""
    if not isinstance(content, str):
        raise LLMUnavailable("bad_response", "the answer has no choices[0].message.content")
    return content
