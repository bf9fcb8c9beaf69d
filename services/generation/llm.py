"""A streaming client for OpenAI-compatible chat completion servers (vLLM, llama.cpp)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
from prometheus_client import Counter, Histogram

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


class LLMUnavailable(Exception):
    """The LLM could not produce a reply in time; `kind` says how it failed."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


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
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.first_token_timeout_s = first_token_timeout_s
        self.total_timeout_s = total_timeout_s
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
    ) -> AsyncIterator[str]:
        """Yield the reply's text as it is generated; raise LLMUnavailable on failure."""
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
