"""Scenario mode: both variants answer the same scripted messages, for pairwise rating.

For each scenario of a set (`services/generation/data/scenarios.yaml` by default: a message, the
emotion the emotion service would have found, and what memory knows) this builds the baseline
and the care prompt with generation's own prompt builder and asks an OpenAI-compatible server
for each reply. The pairs go to a JSON Lines file the LLM judge reads (`cbd evaluate report
--pairs`), and can be queued for human review (`--queue`), where they are paired by scenario.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from services.generation.handlers import build_prompting
from services.generation.settings import GenerationSettings
from services.generation.variants import Variant
from shared.events import (
    NEGATIVE_EMOTIONS,
    ConversationContext,
    CustomerMessage,
    CustomerProfile,
    EmotionAnalysis,
    EmotionLabel,
    HistoryTurn,
    MemoryItem,
    MemoryKind,
    OpenIssue,
    RouteTarget,
    RoutingDecision,
    TurnRouted,
)

DEFAULT_SET = Path(__file__).resolve().parents[1] / "services/generation/data/scenarios.yaml"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ScenarioReply:
    """One variant's reply to one scenario."""

    pair: str
    variant: str
    message: str
    emotion: str
    reply: str
    playbook: str | None
    knowledge_used: list[str]


def load_scenarios(path: Path) -> list[dict[str, Any]]:
    """The scenarios of a set file."""
    data = yaml.safe_load(path.read_text())
    scenarios = data.get("scenarios") if isinstance(data, dict) else None
    if not isinstance(scenarios, list) or not scenarios:
        raise ValueError(f"{path}: no `scenarios:` list")
    return scenarios


def scenario_context(
    memory: dict[str, Any], history: list[HistoryTurn], *, who: str
) -> ConversationContext:
    """The memory context a scenario file describes (name, memories, open issues, mood).

    Shared by the scenario mode here and `cbd evaluate replies` (cbd/reply_rubric.py), so both
    read a scenario's `memory:` block the same way; `who` names the made-up customer.
    """
    profile = None
    if memory.get("name"):
        profile = CustomerProfile(
            customer_id=who,
            preferred_name=memory["name"],
            conversations=int(memory.get("conversations", 1)),
        )
    return ConversationContext(
        recent_turns=list(history),
        profile=profile,
        memories=[
            MemoryItem(
                memory_id=uuid.uuid5(uuid.NAMESPACE_URL, item["slot"]),
                kind=MemoryKind(item["kind"]),
                slot=item["slot"],
                text=item["text"],
                confidence=0.9,
                learned_at=NOW,
            )
            for item in memory.get("items", [])
        ],
        open_issues=[
            OpenIssue(
                issue_id=uuid.uuid5(uuid.NAMESPACE_URL, issue["summary"]),
                category=issue["category"],
                summary=issue["summary"],
                conversation_id=who,
                opened_at=NOW,
                updated_at=NOW,
            )
            for issue in memory.get("open_issues", [])
        ],
        emotional_history=memory.get("emotional_history", ""),
    )


def scenario_turn(spec: dict[str, Any]) -> TurnRouted:
    """The routed turn a scenario describes, as the pipeline would hand it to generation."""
    label = EmotionLabel(spec.get("emotion", "neutral"))
    scores = dict.fromkeys(EmotionLabel, 0.0)
    scores[label] = 1.0
    context = scenario_context(spec.get("memory") or {}, [], who="scenario")
    return TurnRouted(
        message=CustomerMessage(turn_id=uuid.uuid4(), text=spec["text"], received_at=NOW),
        emotion=EmotionAnalysis(
            label=label,
            scores=scores,
            sentiment=-0.5 if label in NEGATIVE_EMOTIONS else 0.0,
            intensity=float(spec.get("intensity", 0.0)),
            model="scenario",
        ),
        context=context,
        route=RoutingDecision(target=RouteTarget.BOT, policy="scenario"),
    )


async def generate(
    scenarios: list[dict[str, Any]],
    *,
    base_url: str,
    model: str,
    api_key: str = "none",
    max_tokens: int = 160,
    settings: GenerationSettings | None = None,
    timeout_s: float = 120.0,
) -> list[ScenarioReply]:
    """Both variants' replies to every scenario (temperature 0: the same prompt, one answer)."""
    from openai import AsyncOpenAI  # noqa: PLC0415

    prompts, _ = build_prompting(settings or GenerationSettings())
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=1)
    out: list[ScenarioReply] = []
    try:
        for spec in scenarios:
            turn = scenario_turn(spec)
            for variant in (Variant.BASELINE, Variant.CARE):
                built = prompts.build(turn, variant)
                # The client's request types are TypedDicts; these are plain dicts of that shape.
                messages: Any = [{"role": m.role, "content": m.content} for m in built.messages]
                completion = await client.chat.completions.create(
                    model=model,
                    messages=messages,
                    temperature=0.0,
                    max_tokens=max_tokens,
                )
                out.append(
                    ScenarioReply(
                        pair=str(spec["id"]),
                        variant=variant.value,
                        message=spec["text"],
                        emotion=turn.emotion.label.value,
                        reply=(completion.choices[0].message.content or "").strip(),
                        playbook=built.playbook,
                        knowledge_used=list(built.knowledge_used),
                    )
                )
    finally:
        await client.close()
    return out


def write_pairs(replies: list[ScenarioReply], path: Path) -> None:
    """The pairs as JSON Lines."""
    path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in replies))


def read_pairs(path: Path) -> list[ScenarioReply]:
    """Pairs written by `write_pairs` (or by hand in the same shape)."""
    return [
        ScenarioReply(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()
    ]
