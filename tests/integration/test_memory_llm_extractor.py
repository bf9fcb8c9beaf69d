"""The optional LLM memory extractor against the real local LLM server."""

from __future__ import annotations

import pytest

from services.memory.extraction import LlmExtractor
from shared.events import MemoryKind
from shared.llm import ChatClient

pytestmark = pytest.mark.integration


async def test_whatever_the_llm_answers_only_valid_memories_come_back(
    stack_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    llm = ChatClient(
        stack_env["CBD_GENERATION_LLM_BASE_URL"],
        stack_env["CBD_GENERATION_LLM_MODEL"],
        total_timeout_s=60,
    )
    try:
        learned = await LlmExtractor(llm).extract("I'm vegan and my cat is called Tom.")
    finally:
        await llm.aclose()
    assert "LLM extractor unavailable" not in caplog.text, "the server must have answered"
    # A 135M-parameter model rarely answers in the asked-for JSON; the point is that what
    # does come back is well-formed and marked as the LLM's, and nothing raises.
    for memory in learned:
        assert memory.kind in set(MemoryKind)
        assert memory.extractor == "llm"
        assert memory.slot.startswith(f"{memory.kind.value}:")
        assert memory.text.strip()


async def test_an_unreachable_llm_is_no_memories_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    llm = ChatClient("http://127.0.0.1:9/v1", "m", total_timeout_s=1)
    try:
        assert await LlmExtractor(llm).extract("I'm vegan") == []
    finally:
        await llm.aclose()
    assert "LLM extractor unavailable" in caplog.text
