"""The consumer checks that run in a loop stop when cancelled, and so do the other awaits
that usually answer at once: readiness probes and buffered LLM lines (a fan-out already
listening: `tests/integration/test_fanout_listening.py`, on the real Redis).

On Python 3.11, `asyncio.wait_for` swallows a cancellation that arrives as the awaited call
completes, and a consumer's `position()` usually completes at once: a loop of such calls
then ignored the cancellation meant to stop it (a chaos run hung on its reply-topic reader).
The same against a real consumer on the broker: `tests/integration/test_rewind.py`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import httpx
from aiokafka import TopicPartition

from shared.lag import measure
from shared.llm import ChatClient, ChatMessage
from shared.rewind import rewind_past_end
from shared.service import Infra, readiness_checks
from tests.kit import stops_when_cancelled

PARTITIONS = [TopicPartition("t", p) for p in range(4)]


class InstantConsumer:
    """Answers at once, standing at the end of every partition."""

    def assignment(self) -> set[TopicPartition]:
        return set(PARTITIONS)

    def highwater(self, tp: TopicPartition) -> int:
        return 10

    async def position(self, tp: TopicPartition) -> int:
        return 10

    async def committed(self, tp: TopicPartition) -> int | None:
        return None

    async def seek_to_beginning(self, *partitions: Any) -> bool:
        return True


async def test_the_rewind_check_stops_when_cancelled() -> None:
    consumer = InstantConsumer()
    assert await stops_when_cancelled(lambda: rewind_past_end("s", "g", consumer)) == 0


async def test_the_lag_measure_stops_when_cancelled() -> None:
    consumer = InstantConsumer()
    assert await stops_when_cancelled(lambda: measure("g", consumer)) == 0


async def test_the_readiness_probes_stop_when_cancelled() -> None:
    async def ping(timeout: float) -> bool:  # noqa: ASYNC109 (KafkaBroker.ping's signature)
        return True

    async def redis_ping() -> bool:
        return True

    infra = cast(
        Infra,
        SimpleNamespace(
            broker=SimpleNamespace(ping=ping), pg=None, redis=SimpleNamespace(ping=redis_ping)
        ),
    )
    assert await readiness_checks(infra) == {"kafka": "ok", "redis": "ok"}
    assert await stops_when_cancelled(lambda: readiness_checks(infra)) == 0


async def test_reading_a_buffered_llm_stream_stops_when_cancelled() -> None:
    chunks = "".join(
        f'data: {{"choices": [{{"delta": {{"content": "w{i} "}}}}]}}\n\n' for i in range(40)
    )

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=chunks + "data: [DONE]\n\n")

    client = ChatClient("http://llm.test/v1", "m")
    client._http = httpx.AsyncClient(
        base_url="http://llm.test/v1", transport=httpx.MockTransport(answer)
    )

    async def read() -> str:
        said = [
            t
            async for t in client.stream(
                [ChatMessage("user", "hi")], max_tokens=8, temperature=0.0, top_p=1.0
            )
        ]
        return "".join(said)

    try:
        assert (await read()).startswith("w0 w1 ")
        assert await stops_when_cancelled(read) == 0
    finally:
        await client.aclose()
