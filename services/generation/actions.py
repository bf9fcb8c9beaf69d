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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from shared.connectors import ActionResult, ConnectorClient
from shared.events import TurnRouted
from shared.intent import Intent, IntentReader, IntentReading

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


class ActionDesk:
    """Reads the turn's intent and runs the actions it needs; built in the service's lifespan."""

    def __init__(self, intents: IntentReader, client: ConnectorClient | None) -> None:
        self.intents = intents
        self.client = client

    async def for_turn(self, turn: TurnRouted, customer_id: str) -> TurnActions:
        """The turn's intent and what its actions returned (none without a connector).

        Memory puts the intent on the turn; a turn from before that is read here.
        """
        text = turn.message.text
        reading = IntentReading.of(turn.intent) if turn.intent else self.intents.read(text)
        if self.client is None:
            return TurnActions(reading)
        results = await run_actions(self.client, plan(reading, text, customer_id))
        for result in results:
            ACTIONS.labels(result.action, "ok" if result.ok else result.error or "failed").inc()
        return TurnActions(reading, tuple(results))
