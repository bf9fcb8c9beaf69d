"""Actions on a tenant's business systems (order status, tracking, account, refunds...).

A tenant describes its systems in YAML (see `shared/data/connectors.demo.yaml`): for each action,
the HTTP method and path, which entities it needs, and which fields of the JSON answer are facts
the bot may state. The platform never invents what a business system would say: a reply may only
claim what an action's result carries (generation's grounding check reads `ActionResult.facts`),
and an action that fails becomes "I'll check with a colleague" and a ticket, never a guess.

Usage::

    spec = load_connectors(path)                      # validated at start-up
    async with ConnectorClient(spec, base_url=..., token=...) as client:
        result = await client.run("order_status", {"order_id": "A1001"})

Both generation (actions on a turn) and memory (CRM sync into the profile) use this module, so it
lives in `shared/`.
"""

from __future__ import annotations

import string
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEMO_CONNECTORS = Path(__file__).parent / "data" / "connectors.demo.yaml"
"""The stand-in CRM's description (`cbd/crm_standin.py`), used by `make run` and the tests."""

ENTITY_NAMES = frozenset({"order_id", "customer_id", "product", "reason", "email"})
"""Entities an action may need: what the platform can know from the turn and the customer."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionSpec(_Spec):
    """One call on a tenant system."""

    description: str
    method: Literal["GET", "POST"] = "GET"
    path: str
    """Path template on the connector's base URL; `{entity}` placeholders are URL-quoted."""
    needs: list[str] = []
    """Entities that must be known before the action can run."""
    body: list[str] = []
    """Entities sent as the JSON body of a POST."""
    facts: dict[str, str] = {}
    """fact name -> dotted field path in the JSON answer ("eta", "carrier.name")."""
    says: str = ""
    """A sentence built from the facts ("Order {order_id} is {status}."), the prompt's wording."""
    done: str = ""
    """What the action did, for actions that change something ("requested a refund review")."""

    @field_validator("needs", "body")
    @classmethod
    def _known_entities(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - ENTITY_NAMES)
        if unknown:
            raise ValueError(f"unknown entities {unknown}; known: {sorted(ENTITY_NAMES)}")
        return names

    @model_validator(mode="after")
    def _placeholders_known(self) -> Self:
        for template, allowed in (
            (self.path, set(self.needs)),
            (self.says, set(self.needs) | set(self.facts)),
        ):
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            missing = sorted(fields - allowed)
            if missing:
                raise ValueError(f"{template!r} uses {missing}, not among needs or facts")
        return self


class ConnectorSpec(_Spec):
    """A tenant's systems: a name and the actions they offer."""

    name: str
    timeout_s: float = Field(default=2.0, gt=0, le=30)
    actions: dict[str, ActionSpec]


MODEL_ENTITIES: Mapping[str, str] = {
    "order_id": "The order reference exactly as the customer wrote it (e.g. A1001)",
    "product": "The product the customer asked about, in their words",
    "email": "The email address the customer gave",
}
"""Entities a model may fill in a tool call, described for it. The others come from the
platform: `customer_id` is always the verified customer (a model must never choose whose account
is read) and `reason` is the customer's own message."""


def tool_definitions(spec: ConnectorSpec) -> list[dict[str, Any]]:
    """The tenant's actions as OpenAI-style `tools`, for models that choose actions themselves.

    Only the entities a model may fill are parameters; the platform adds the rest.
    """
    tools: list[dict[str, Any]] = []
    for name, action in spec.actions.items():
        params = [n for n in action.needs if n in MODEL_ENTITIES]
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": action.description,
                    "parameters": {
                        "type": "object",
                        "properties": {
                            n: {"type": "string", "description": MODEL_ENTITIES[n]} for n in params
                        },
                        "required": params,
                        "additionalProperties": False,
                    },
                },
            }
        )
    return tools


def load_connectors(path: Path) -> ConnectorSpec:
    """Read and validate a connector description; a bad file fails start-up with the reason."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return ConnectorSpec.model_validate(raw)


class ActionResult(BaseModel):
    """What one action returned: facts the reply may state, or why it could not run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str
    ok: bool
    facts: dict[str, str] = {}
    summary: str = ""
    """The action's `says` sentence with its facts filled in (empty when it failed)."""
    done: str = ""
    """What the action did, when it changed something; backs a "I've requested..." claim."""
    error: str = ""
    latency_ms: float = 0.0


def _field(document: Any, dotted: str) -> str | None:
    value = document
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if value is None or isinstance(value, Mapping | list):
        return None
    return str(value)


class ConnectorClient:
    """Runs a tenant's actions over HTTP; created in a service's lifespan and injected."""

    def __init__(
        self,
        spec: ConnectorSpec,
        *,
        base_url: str,
        token: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.spec = spec
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=spec.timeout_s, headers=headers, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    def ready(self, action: str, entities: Mapping[str, str]) -> bool:
        """Whether `action` exists and every entity it needs is known."""
        spec = self.spec.actions.get(action)
        return spec is not None and all(entities.get(n) for n in spec.needs)

    async def run(self, action: str, entities: Mapping[str, str]) -> ActionResult:
        """Run one action. Never raises for the system's faults: they come back as `ok=False`."""
        spec = self.spec.actions.get(action)
        if spec is None:
            return ActionResult(action=action, ok=False, error="unknown action")
        missing = [n for n in spec.needs if not entities.get(n)]
        if missing:
            return ActionResult(action=action, ok=False, error=f"missing {', '.join(missing)}")
        values = {n: entities[n] for n in spec.needs}
        path = spec.path.format(**{k: quote(v, safe="") for k, v in values.items()})
        started = time.perf_counter()
        try:
            if spec.method == "GET":
                answer = await self._http.get(path)
            else:
                answer = await self._http.post(
                    path, json={n: entities.get(n, "") for n in spec.body}
                )
            elapsed = (time.perf_counter() - started) * 1000
            if answer.status_code == 404:
                return ActionResult(action=action, ok=False, error="not found", latency_ms=elapsed)
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            elapsed = (time.perf_counter() - started) * 1000
            return ActionResult(
                action=action, ok=False, error=type(exc).__name__, latency_ms=elapsed
            )
        facts = {name: v for name, path_ in spec.facts.items() if (v := _field(document, path_))}
        try:
            summary = spec.says.format(**{**values, **facts})
        except KeyError:
            # A fact the sentence needs is missing from the answer: state the facts alone.
            summary = "; ".join(f"{k}: {v}" for k, v in facts.items())
        return ActionResult(
            action=action,
            ok=True,
            facts=facts,
            summary=summary,
            done=spec.done,
            latency_ms=elapsed,
        )
