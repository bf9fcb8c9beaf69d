"""`cbd evaluate replies SCENARIOS`: score what reaches the customer on the care checks.

Each scenario is a conversation of customer turns (text, the emotion the emotion service
would report, optional memory). A turn with a `reply` scores that reply as if the LLM had
written it (a recorded reply, or a known bad one); a turn without one asks the LLM at
`--llm-url` (or none at all in `--mode composed`). Either way the turn goes through the real
generation handler in the chosen mode, and everything the customer would see (streamed
slices and the final reply) is scored by the rubric: grounding violations, unkind tone,
acknowledgement of a negative message, relevance. The table goes to stdout, then the JSON
(or the JSON to `--json FILE`).

    cbd evaluate replies services/generation/data/reply_scenarios.yaml --mode composed
    cbd evaluate replies SCENARIOS --mode llm --llm-url http://127.0.0.1:8090/v1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import yaml

from cbd.scenarios import scenario_context
from services.generation.care import CareKit, customer_is_negative
from services.generation.handlers import GenerationHandlers
from services.generation.settings import GenerationSettings, ReplyMode
from shared.events import (
    Channel,
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    Envelope,
    HistoryTurn,
    ReplyDeltaEvent,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    RouteTarget,
    RoutingDecision,
    TurnReceived,
    TurnReceivedEvent,
    TurnRouted,
    TurnRoutedEvent,
)
from shared.kafka import EventBus
from shared.llm import ChatClient, ChatMessage
from shared.topics import Topic

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


class _Collector:
    """Stands in for Kafka: keeps what the handler would publish."""

    def __init__(self) -> None:
        self.events: list[tuple[Topic, Envelope]] = []

    async def publish(self, event: Envelope, /, *, confirm: bool = True) -> None:
        self.events.append((Topic.for_event(event), event))


class _Scripted:
    """An LLM that says what the scenario file says (the reply, then the regeneration)."""

    model = "scripted"

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies = list(replies)
        self.calls = 0

    async def stream(self, messages: Sequence[ChatMessage], **_: Any) -> AsyncIterator[str]:
        text = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        for word in text.split(" "):
            yield word + " "

    async def aclose(self) -> None:
        """Nothing to close."""


@dataclass
class TurnScore:
    """What the rubric found in what one turn showed the customer."""

    scenario: str
    turn: int
    message: str
    negative: bool
    verdict: str | None
    reply: str
    flags: list[str]
    grounding_violations: list[str] = field(default_factory=list)
    unkind: list[str] = field(default_factory=list)
    acknowledged: bool | None = None
    relevance: float | None = None
    draft_findings: list[str] = field(default_factory=list)
    voice: list[str] = field(default_factory=list)
    """What was shown that is not a reply to the customer in their language (narration about
    them, meta text, another language)."""


def _event(
    conversation: str, turn: dict[str, Any], context: ConversationContext
) -> TurnRoutedEvent:
    message = CustomerMessage(
        turn_id=uuid.uuid4(), text=turn["text"], received_at=datetime.now(UTC)
    )
    label = EmotionLabel(turn.get("emotion", "neutral"))
    scores = dict.fromkeys(EmotionLabel, 0.0)
    scores[label] = 1.0
    received = TurnReceivedEvent.create(
        conversation_id=conversation,
        customer_id="eval",
        channel=Channel.WEB,
        payload=TurnReceived(message=message),
    )
    payload = TurnRouted(
        message=message,
        emotion=EmotionAnalysis(
            label=label,
            scores=scores,
            sentiment=float(turn.get("sentiment", 0.0)),
            intensity=float(turn.get("intensity", 0.5)),
            model="scenario",
        ),
        context=context,
        route=RoutingDecision(target=RouteTarget.BOT, policy="evaluate"),
    )
    return received.derive(TurnRoutedEvent, payload)


def load_scenarios(path: Path) -> list[dict[str, Any]]:
    """The scenarios of a YAML file, each with an `id` and its `turns`."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    scenarios = spec.get("scenarios") if isinstance(spec, dict) else None
    if not isinstance(scenarios, list):
        raise SystemExit(f"{path}: expected a mapping with a list of scenarios")
    return scenarios


async def evaluate(
    scenarios: list[dict[str, Any]],
    settings: GenerationSettings,
    llm: ChatClient | None,
    kit: CareKit | None = None,
) -> list[TurnScore]:
    """Run every scenario's turns through the handler and score what the customer saw."""
    scores: list[TurnScore] = []
    kit_shared = kit
    for scenario in scenarios:
        history: list[HistoryTurn] = []
        for number, turn in enumerate(scenario["turns"], 1):
            bus = _Collector()
            scripted = turn.get("reply")
            client: Any
            if scripted is not None:
                client = _Scripted([scripted, *(turn.get("regenerated") or [scripted])])
            elif llm is not None or settings.reply_mode is ReplyMode.COMPOSED:
                client = llm or _Scripted([""])
            else:
                raise SystemExit(
                    f"{scenario['id']} turn {number}: no reply and no --llm-url "
                    "(or --scripted-only, or --mode composed)"
                )
            handlers = GenerationHandlers(
                cast(EventBus, bus), cast(ChatClient, client), settings, care=kit_shared
            )
            kit_shared = handlers.care
            context = scenario_context(scenario.get("memory") or {}, history, who="eval")
            event = _event(f"eval-{scenario['id']}", turn, context)
            await handlers.on_turn_routed(event)
            deltas = [
                cast(ReplyDeltaEvent, e).payload.text
                for t, e in bus.events
                if t is Topic.REPLY_DELTA
            ]
            [reply] = [
                cast(ReplyGeneratedEvent, e).payload
                for t, e in bus.events
                if t is Topic.REPLY_GENERATED
            ]
            prompt = handlers.prompts.build(event.payload)
            check = handlers.care.for_turn(event.payload, prompt)
            scores.append(score(scenario["id"], number, event.payload, reply, deltas, check))
            history += [
                HistoryTurn(role=Role.CUSTOMER, text=turn["text"], at=NOW),
                HistoryTurn(role=Role.BOT, text=reply.text, at=NOW),
            ]
    return scores


def score(
    scenario: str,
    number: int,
    turn: TurnRouted,
    reply: ReplyGenerated,
    deltas: list[str],
    check: Any,
) -> TurnScore:
    """The rubric on everything shown: each streamed slice and the final reply."""
    shown = ["".join(deltas), reply.text] if deltas else [reply.text]
    grounding: list[str] = []
    unkind: list[str] = []
    voice: list[str] = []
    for text in dict.fromkeys(shown):
        report = check.whole(text, relevance=False)
        grounding += [f.detail for f in report.findings if f.check == "grounding"]
        unkind += [f.detail for f in report.findings if f.check == "tone"]
        voice += [f.detail for f in report.findings if f.check in ("voice", "language")]
    negative = customer_is_negative(turn, check.cues.is_sarcastic(turn.message.text) is not None)
    final = check.whole(reply.text)
    acknowledged = None
    if negative:
        acknowledged = not any(f.check == "acknowledgement" for f in final.findings)
    return TurnScore(
        scenario=scenario,
        turn=number,
        message=turn.message.text,
        negative=negative,
        verdict=reply.care_verdict.value if reply.care_verdict else None,
        reply=reply.text,
        flags=list(reply.flags),
        grounding_violations=list(dict.fromkeys(grounding)),
        unkind=list(dict.fromkeys(unkind)),
        acknowledged=acknowledged,
        relevance=final.relevance,
        draft_findings=[f"{f.check}:{f.flag.value}" for f in reply.care_findings],
        voice=list(dict.fromkeys(voice)),
    )


def summary(scores: Sequence[TurnScore]) -> dict[str, Any]:
    """The figures the issue's acceptance reads."""
    negative = [s for s in scores if s.negative]
    rel = [s.relevance for s in scores if s.relevance is not None]
    verdicts: dict[str, int] = {}
    for s in scores:
        verdicts[s.verdict or "none"] = verdicts.get(s.verdict or "none", 0) + 1
    return {
        "replies": len(scores),
        "with_grounding_violations": sum(1 for s in scores if s.grounding_violations),
        "unkind": sum(1 for s in scores if s.unkind),
        "not_to_the_customer": sum(1 for s in scores if s.voice),
        "negative_messages": len(negative),
        "acknowledged_share": (
            sum(1 for s in negative if s.acknowledged) / len(negative) if negative else None
        ),
        "relevance_mean": sum(rel) / len(rel) if rel else None,
        "verdicts": verdicts,
    }


def table(scores: Sequence[TurnScore]) -> str:
    """One line per reply."""
    head = (
        f"{'scenario':<26} {'#':>2} {'verdict':<12} {'ground':>6} {'tone':>5} {'ack':>4} "
        f"{'rel':>5}  reply"
    )
    lines = [head, "-" * len(head)]
    for s in scores:
        ack = "-" if s.acknowledged is None else ("yes" if s.acknowledged else "NO")
        rel = "-" if s.relevance is None else f"{s.relevance:.2f}"
        text = s.reply.replace("\n", " ")
        lines.append(
            f"{s.scenario[:26]:<26} {s.turn:>2} {str(s.verdict)[:12]:<12} "
            f"{len(s.grounding_violations):>6} {('ok' if not s.unkind else 'BAD'):>5} "
            f"{ack:>4} {rel:>5}  {text[:70]}"
        )
    return "\n".join(lines)


async def replies_command(args: argparse.Namespace, scenarios: list[dict[str, Any]]) -> int:
    """`cbd evaluate replies`."""
    settings = GenerationSettings(
        reply_mode=ReplyMode(args.mode),
        delta_flush_ms=0,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        first_token_timeout_s=60,
        **({"llm_base_url": args.llm_url} if args.llm_url else {}),
    )
    llm: ChatClient | None = None
    if args.llm_url:
        llm = ChatClient(args.llm_url, args.model, first_token_timeout_s=60, total_timeout_s=120)
    try:
        scores = await evaluate(scenarios, settings, llm)
    finally:
        if llm is not None:
            await llm.aclose()
    report = {
        "mode": args.mode,
        "summary": summary(scores),
        "replies": [s.__dict__ for s in scores],
    }
    print(table(scores))
    args.report = report
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry point from `cbd evaluate`: the table, then the JSON (or the JSON to a file)."""
    scenarios = load_scenarios(Path(args.scenarios))
    if args.scripted_only:
        scenarios = [s for s in scenarios if all("reply" in t for t in s["turns"])]
    rc = asyncio.run(replies_command(args, scenarios))
    report = args.report
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(json.dumps(report["summary"], indent=2))
    else:
        print(json.dumps(report, indent=2))
    return rc
