"""Which actions on the tenant's systems a turn needs, and running them before the reply.

The choice is deterministic from the turn's intent and entities (`shared/intent.py`): an order
question that names an order looks the order up and tracks it; a refund request on a named order
asks for a refund review; "tell me when X is back" sets up a notification. Results become facts
in the prompt and back the reply's claims (the care check's grounding); what ran is recorded as
`actions_used` on `reply.generated`. A failed action never turns into a guess: the reply says a
colleague will check, and the flag it carries opens a ticket.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from shared.connectors import MODEL_ENTITIES, ActionResult, ConnectorClient, tool_definitions
from shared.events import TurnRouted
from shared.intent import Intent, IntentReader, IntentReading
from shared.llm import ChatClient, ChatMessage, LLMUnavailable, ToolCall

log = logging.getLogger(__name__)

ACTIONS = Counter(
    "cbd_generation_actions_total",
    "Actions run on the tenant's systems, by action and outcome (ok, not found, or the error).",
    ["action", "outcome"],
)

PLANS: Mapping[Intent, tuple[str, ...]] = {
    Intent.ORDER_STATUS: ("order_status", "tracking"),
    Intent.DELIVERY: ("order_status", "tracking"),
    Intent.REFUND: ("refund_review",),
    Intent.AVAILABILITY: ("notify_when_available",),
    Intent.ACCOUNT: ("account_lookup",),
}
"""Intent -> the actions that answer it, each run only when its entities are known."""

_WANTS_NOTICE = re.compile(
    r"\b(?:tell|let|notify|email|text|message|ping)\s+me\s+(?:know\s+)?when\b", re.IGNORECASE
)
_ACCOUNT_QUESTION = re.compile(
    r"\b(?:my\s+(?:account|tier|membership|orders?|purchases?|points)|order\s+history)\b",
    re.IGNORECASE,
)

COLLEAGUE_CHECK = (
    "I couldn't reach our order system just now, so I've asked a colleague to check this for "
    "you; they'll come back to you here."
)
"""What the customer is told when an action fails: honest, and a person follows up."""


def plan(reading: IntentReading, text: str, customer_id: str) -> list[tuple[str, dict[str, str]]]:
    """The actions to run for this turn, with the entities each gets."""
    entities = {**reading.entities, "customer_id": customer_id, "reason": text[:500]}
    steps: list[tuple[str, dict[str, str]]] = []
    for action in PLANS.get(reading.intent, ()):
        if action == "notify_when_available" and not _WANTS_NOTICE.search(text[:4000]):
            continue
        if action == "account_lookup" and not _ACCOUNT_QUESTION.search(text[:4000]):
            continue
        steps.append((action, entities))
    return steps


async def run_actions(
    client: ConnectorClient, steps: Sequence[tuple[str, dict[str, str]]]
) -> list[ActionResult]:
    """Run the planned actions that have what they need, at once; faults come back as results."""
    ready = [(a, e) for a, e in steps if client.ready(a, e)]
    return list(await asyncio.gather(*(client.run(a, e) for a, e in ready)))


def action_facts(results: Sequence[ActionResult]) -> list[str]:
    """Sentences for the prompt's facts section: what the systems said, nothing more."""
    facts = [r.summary for r in results if r.ok and r.summary]
    if any(r.error == "not found" for r in results):
        facts.append("The order system has no record matching the reference the customer gave.")
    return facts


def needs_colleague(results: Sequence[ActionResult]) -> bool:
    """Whether an action failed, so a person must follow up instead of the bot guessing."""
    return any(not r.ok and r.error != "not found" for r in results)


@dataclass(frozen=True)
class TurnActions:
    """What the tenant's systems said for one turn."""

    intent: IntentReading | None = None
    results: tuple[ActionResult, ...] = ()

    @property
    def facts(self) -> list[str]:
        """Sentences for the prompt."""
        return action_facts(self.results)

    @property
    def backing(self) -> list[str]:
        """What the care check may accept as done or checked: one line per successful action."""
        return [
            f"checked {r.action.replace('_', ' ')}: {r.summary}" + (f"; {r.done}" if r.done else "")
            for r in self.results
            if r.ok
        ]

    @property
    def used(self) -> list[str]:
        """`actions_used` on the reply: each action run, with `:failed` when it did not answer."""
        return [r.action if r.ok else f"{r.action}:failed" for r in self.results]

    @property
    def needs_colleague(self) -> bool:
        """Whether a person must follow up because a system did not answer."""
        return needs_colleague(self.results)


CHOICES = Counter(
    "cbd_generation_action_choices_total",
    "How a turn's actions were chosen: by the intent, by the model (tool calls), or by the "
    "intent because the model could not choose (fallback).",
    ["by"],
)

MAX_MODEL_ACTIONS = 4
"""The most actions one turn runs on a model's say."""

TOOL_PROMPT = (
    "You can look things up in the company's systems with the functions given. Call a "
    "function only when the customer's message needs what it returns, with the values exactly "
    "as the customer wrote them. Otherwise call none."
)


def model_steps(
    calls: Sequence[ToolCall], client: ConnectorClient, text: str, customer_id: str
) -> list[tuple[str, dict[str, str]]]:
    """The model's tool calls as actions to run: known actions only, each with only the entities
    a model may fill (`MODEL_ENTITIES`), and the platform's own customer id and reason."""
    steps: list[tuple[str, dict[str, str]]] = []
    for call in calls:
        spec = client.spec.actions.get(call.name)
        if spec is None:
            continue
        entities = {
            k: v[:200] for k, v in call.arguments.items() if k in MODEL_ENTITIES and k in spec.needs
        }
        step = (call.name, {**entities, "customer_id": customer_id, "reason": text[:500]})
        if step not in steps:
            steps.append(step)
    # A turn asks about a few things at most; a model calling more is not obeyed further.
    return steps[:MAX_MODEL_ACTIONS]


class ActionDesk:
    """Reads the turn's intent and runs the actions it needs; built in the service's lifespan.

    With a `chooser` (a model that supports tool calls, `CBD_GENERATION_ACTIONS_CHOSEN_BY=model`)
    the model picks the actions from the tenant's tool definitions; when it cannot (the server
    does not take `tools`, times out, fails), the intent's deterministic plan is used.
    """

    def __init__(
        self,
        intents: IntentReader,
        client: ConnectorClient | None,
        chooser: ChatClient | None = None,
    ) -> None:
        self.intents = intents
        self.client = client
        self.chooser = chooser
        self.tools = tool_definitions(client.spec) if client is not None else []

    async def _steps(
        self, reading: IntentReading, text: str, customer_id: str
    ) -> list[tuple[str, dict[str, str]]]:
        assert self.client is not None
        if self.chooser is None:
            CHOICES.labels("intent").inc()
            return plan(reading, text, customer_id)
        try:
            calls = await self.chooser.choose_tools(
                [ChatMessage("system", TOOL_PROMPT), ChatMessage("user", text[:4000])], self.tools
            )
        except LLMUnavailable as exc:
            CHOICES.labels("fallback").inc()
            log.warning("the model could not choose actions (%s); the intent's plan is used", exc)
            return plan(reading, text, customer_id)
        CHOICES.labels("model").inc()
        return model_steps(calls, self.client, text, customer_id)

    async def for_turn(self, turn: TurnRouted, customer_id: str) -> TurnActions:
        """The turn's intent and what its actions returned (none without a connector).

        Memory puts the intent on the turn; a turn from before that is read here.
        """
        text = turn.message.text
        reading = IntentReading.of(turn.intent) if turn.intent else self.intents.read(text)
        if self.client is None:
            return TurnActions(reading)
        results = await run_actions(self.client, await self._steps(reading, text, customer_id))
        for result in results:
            ACTIONS.labels(result.action, "ok" if result.ok else result.error or "failed").inc()
        return TurnActions(reading, tuple(results))
