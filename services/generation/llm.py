"""A streaming client for OpenAI-compatible chat completion servers (vLLM, llama.cpp)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

import httpx
from prometheus_client import Counter, Histogram

from services.generation.breaker import CircuitBreaker
from shared.metrics import LATENCY_BUCKETS

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


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat completion request."""

    role: str
    content: str


class ChatClient:
    """Streams chat completions with separate budgets for connecting, first token and total."""

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
        breaker: CircuitBreaker | None = None,
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
    ) -> AsyncGenerator[str, None]:
        """Yield the reply's text as it is generated; raise LLMUnavailable on failure.

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
            async with aclosing(self._with_retries(messages, max_tokens, temperature, top_p)) as it:
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

    async def _with_retries(
        self, messages: Sequence[ChatMessage], max_tokens: int, temperature: float, top_p: float
    ) -> AsyncGenerator[str, None]:
        give_up_at = time.perf_counter() + self.first_token_timeout_s
        attempt = 0
        while True:
            streamed = False
            try:
                async with aclosing(
                    self._stream_once(
                        messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p
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
    ) -> AsyncGenerator[str, None]:
        """One streamed request, without retries."""
        body = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stream": True,
        }
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
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        raise TimeoutError
                    try:
                        line = await asyncio.wait_for(anext(lines), remaining)
                    except StopAsyncIteration:
                        break
                    text, done = _parse_sse_line(line)
                    if done:
                        break
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

    def __init__(self, breaker: CircuitBreaker | None) -> None:
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


def _parse_sse_line(line: str) -> tuple[str, bool]:
    """The text in one server-sent-events line, and whether the stream has ended.

    Anything that is not a well-formed chunk carries no text: a server that sends keep-alive
    comments or odd JSON must not turn into an exception in the middle of a reply.
    """
    if not line.startswith("data:"):
        return "", False
    data = line[5:].strip()
    if data == "[DONE]":
        return "", True
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        return "", False
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", False
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return (content if isinstance(content, str) else ""), False
