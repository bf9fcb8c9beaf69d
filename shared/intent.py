"""What a customer's turn is about (intent), the skill queue that serves it, and its entities.

Escalation puts the intent on every routed turn and on the ticket, so a person with the right
skill picks it up; generation decides from it which action on the tenant's systems to run
(`shared/connectors.py`). Two readers agree because both call this module.

The reading is deterministic: a logistic regression over the message's MiniLM embedding
(trained on public customer-service data and the examples in `shared/data/intents.yaml`, see
`shared/data/intents/DATASHEET.md`) gives each intent a probability; a matching cue phrase adds
`CUE_BONUS`; bereavement and fraud cues decide alone. Without an embedder only cues count. Every
pattern is a literal alternation under word boundaries, so matching is linear in the text's length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.embedding import Embedder
from shared.events import TurnIntent

INTENTS_FILE = Path(__file__).parent / "data" / "intents.yaml"
MODEL_FILE = Path(__file__).parent / "data" / "intents" / "model.npz"
"""Logistic regression over MiniLM embeddings, from `make intent-model` (cbd/intent_model.py)."""
CUE_BONUS = 0.35
"""What a matching cue adds to the model's probability for its intent (set on the dev split)."""
OVERRIDING = frozenset({"bereavement", "fraud"})
"""Intents whose cues decide alone: a person with that skill must see them, whatever else fits."""


class Intent(StrEnum):
    """What the customer needs, coarse enough to pick a queue and an action."""

    DELIVERY = "delivery"
    ORDER_STATUS = "order_status"
    BILLING = "billing"
    REFUND = "refund"
    TECHNICAL = "technical"
    ACCOUNT = "account"
    FRAUD = "fraud"
    BEREAVEMENT = "bereavement"
    COMPLAINT = "complaint"
    AVAILABILITY = "availability"
    GENERAL = "general"


class _IntentRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    skill: str
    urgency: float = Field(ge=0.0, le=1.0)
    """How soon a person should take it (0-1), part of the ticket's risk score."""
    cues: list[str] = []
    examples: list[str] = []


class _IntentFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    priority: list[Intent]
    """When cues of several intents match, the first in this list wins (fraud before billing)."""
    intents: dict[Intent, _IntentRule]


@dataclass(frozen=True)
class IntentReading:
    """One turn's intent, skill queue, urgency, entities and why."""

    intent: Intent
    skill: str
    urgency: float
    confidence: float
    evidence: str
    entities: dict[str, str] = field(default_factory=dict)

    def contract(self) -> TurnIntent:
        """As the turn carries it."""
        return TurnIntent(
            intent=self.intent.value,
            skill=self.skill,
            urgency=self.urgency,
            confidence=min(self.confidence, 1.0),
            evidence=self.evidence,
            entities=dict(self.entities),
        )

    @classmethod
    def of(cls, carried: TurnIntent) -> IntentReading:
        """Back from the turn."""
        return cls(
            intent=Intent(carried.intent),
            skill=carried.skill,
            urgency=carried.urgency,
            confidence=carried.confidence,
            evidence=carried.evidence,
            entities=dict(carried.entities),
        )


_ORDER_ID = re.compile(
    r"\b(?:order|parcel|package|delivery|ref(?:erence)?)\s*(?:number|no\.?|#|id)?\s*[:#]?\s*"
    r"([A-Z]{0,3}-?\d{3,12})\b|\b([A-Z]\d{4,10})\b",
    re.IGNORECASE,
)
_PRODUCT = re.compile(
    r"\b(?:the|your|a|an)\s+([a-z][a-z0-9 -]{1,40}?)\s+(?:is|are|will be|gets?|comes?)\s+"
    r"(?:back\s+in\s+stock|back|available|in\s+stock|restocked)\b",
    re.IGNORECASE,
)


def entities_of(text: str) -> dict[str, str]:
    """Order ids and products named in the text (bounded patterns, linear time)."""
    found: dict[str, str] = {}
    if m := _ORDER_ID.search(text[:4000]):
        found["order_id"] = (m.group(1) or m.group(2)).upper()
    if m := _PRODUCT.search(text[:4000]):
        found["product"] = m.group(1).strip()
    return found


class IntentReader:
    """Reads intents; build one per process (it compiles the cues and loads the model)."""

    def __init__(
        self,
        embedder: Embedder | None = None,
        path: Path = INTENTS_FILE,
        model_file: Path = MODEL_FILE,
    ) -> None:
        config = _load(path)
        self._config = config
        self._embedder = embedder
        self._cues = {
            intent: re.compile(
                r"\b(?:" + "|".join(re.escape(c) for c in rule.cues) + r")\b", re.IGNORECASE
            )
            for intent, rule in config.intents.items()
            if rule.cues
        }
        self._model: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], list[Intent]] | None
        self._model = None
        if embedder is not None and model_file.exists():
            with np.load(model_file) as saved:
                self._model = (
                    saved["coef"].astype(np.float32),
                    saved["intercept"].astype(np.float32),
                    [Intent(c) for c in saved["classes"].tolist()],
                )

    def skill_of(self, intent: Intent) -> str:
        """The queue a person with this skill serves."""
        return self._config.intents[intent].skill

    def read(self, text: str, vector: npt.NDArray[np.float32] | None = None) -> IntentReading:
        """The turn's intent; `general` when nothing says otherwise.

        `vector`: the text's MiniLM embedding when the caller has it already (memory does).
        """
        sample = text[:4000]
        matched = {i: m.group(0) for i, rx in self._cues.items() if (m := rx.search(sample))}
        entities = entities_of(sample)
        decisive = [i for i in self._config.priority if i in matched and i in OVERRIDING]
        if decisive:
            return self._reading(decisive[0], 0.95, f"cue: {matched[decisive[0]]}", entities)
        scores = self._probabilities(sample, vector)
        for intent in matched:
            scores[intent] = scores.get(intent, 0.0) + CUE_BONUS
        if scores:
            order = {i: n for n, i in enumerate(self._config.priority)}
            best = max(scores, key=lambda i: (scores[i], -order[i]))
            evidence = f"cue: {matched[best]}" if best in matched else f"model: {scores[best]:.2f}"
            confidence = min(scores[best], 1.0)
        else:
            best, evidence, confidence = Intent.GENERAL, "no cue", 0.5
        # A delivery question that names an order is a lookup the tenant's systems can answer.
        if best in (Intent.DELIVERY, Intent.GENERAL) and "order_id" in entities:
            best, evidence = Intent.ORDER_STATUS, f"{evidence}; order {entities['order_id']}"
        return self._reading(best, confidence, evidence, entities)

    def _probabilities(
        self, text: str, vector: npt.NDArray[np.float32] | None
    ) -> dict[Intent, float]:
        if self._model is None or self._embedder is None:
            return {}
        coef, intercept, classes = self._model
        if vector is None:
            vector = self._embedder.embed([text])[0]
        logits = vector @ coef.T + intercept
        exp = np.exp(logits - logits.max())
        probabilities = exp / exp.sum()
        return {c: float(p) for c, p in zip(classes, probabilities, strict=True)}

    def _reading(
        self, intent: Intent, confidence: float, evidence: str, entities: dict[str, str]
    ) -> IntentReading:
        rule = self._config.intents[intent]
        return IntentReading(
            intent=intent,
            skill=rule.skill,
            urgency=rule.urgency,
            confidence=round(confidence, 3),
            evidence=evidence,
            entities=entities,
        )


@cache
def _load(path: Path) -> _IntentFile:
    config = _IntentFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    missing = set(Intent) - set(config.intents)
    if missing or set(config.priority) != set(config.intents):
        raise ValueError(f"{path}: every intent needs a rule and a place in priority")
    return config
