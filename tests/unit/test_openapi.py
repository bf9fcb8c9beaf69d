"""Every service's HTTP surface is in its generated OpenAPI document, and the document is valid."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from services.audit.app import create_app as audit_app
from services.emotion.app import create_app as emotion_app
from services.escalation.app import create_app as escalation_app
from services.generation.app import create_app as generation_app
from services.ingest.app import create_app as ingest_app
from services.memory.app import create_app as memory_app
from shared.http import undocumented_routes

SERVICES: dict[str, Callable[[], FastAPI]] = {
    "audit": audit_app,
    "emotion": emotion_app,
    "escalation": escalation_app,
    "generation": generation_app,
    "ingest": ingest_app,
    "memory": memory_app,
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_route_is_documented(service: str) -> None:
    app = SERVICES[service]()
    assert undocumented_routes(app) == []
    document = app.openapi()
    validate(document)
    assert {"/livez", "/readyz", "/metrics"} <= set(document["paths"])


def test_refusals_are_documented_with_the_error_shape() -> None:
    document = escalation_app().openapi()
    claim = document["paths"]["/v1/agent/tickets/{ticket_id}/claim"]["post"]
    for status in ("401", "404", "409", "503"):
        schema = claim["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert set(document["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "message"}
