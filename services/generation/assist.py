"""Agent assist: coaching tips for the person handling a conversation.

The suggested reply itself is drafted by the same machinery as a bot reply (the care prompt
with its playbook, memory and knowledge, then the guardrails; see `handlers`), with an
instruction that it is a draft for the agent. The tips below come without the LLM, so an
agent gets them even while the LLM is down.
"""

from __future__ import annotations

from services.generation.playbooks import Playbook
from services.generation.prompt import STRATEGIES
from shared.events import TurnRouted

SIGNAL_TIPS: dict[str, str] = {
    "vulnerability": "The customer may be in a vulnerable situation: slow down, acknowledge it "
    "first, and check what support they need.",
    "legal_threat": "Stay factual and calm; do not argue liability. Offer the formal complaint "
    "route if they want it.",
    "churn_threat": "They are thinking of leaving: ask what would make this right before "
    "offering anything.",
    "repetition": "They have repeated themselves: show you have read the history and do not "
    "ask again for what they already gave.",
    "profanity": "Do not mirror the language; acknowledge the frustration behind it.",
    "urgency": "Say clearly what you will do now and by when.",
    "human_request": "They asked for a person: introduce yourself by name.",
}


def coaching_tips(turn: TurnRouted, playbook: Playbook | None = None) -> list[str]:
    """Tips for this moment: the strategy for the feeling, the scenario's playbook, then one
    per risk signal."""
    tips = [STRATEGIES[turn.emotion.label]]
    if playbook is not None:
        tips.append(f"{playbook.title}: {playbook.strategy}")
    seen: set[str] = set()
    for signal in turn.emotion.signals:
        tip = SIGNAL_TIPS.get(signal.name)
        if tip and signal.name not in seen:
            seen.add(signal.name)
            tips.append(tip)
    return tips
