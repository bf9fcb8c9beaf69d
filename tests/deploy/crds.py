"""The operators' own CRD schemas, to validate the custom resources the manifests render.

The schemas are the `openAPIV3Schema` of each served version, taken from the operators'
repositories at a release (shared/data/crds/README.md names the tag, commit and licence) with
their descriptions dropped. The API server prunes fields a schema does not name, so a misspelt
field would silently vanish on a real cluster; here every object schema that lists its
properties and does not preserve unknown fields is closed, so such a field is an error.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

CRD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "crds"


def close(schema: Any) -> Any:
    """A copy of a structural schema in which unknown fields fail validation."""
    if isinstance(schema, list):
        return [close(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: close(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def sources() -> dict[str, dict[str, Any]]:
    """Each vendored operator file: source repository, tag, commit and schemas."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(CRD_DIR.glob("*.json"))}


@cache
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """Closed schemas by (apiVersion, kind), for every served version vendored."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for source in sources().values():
        for key, schema in source["schemas"].items():
            group, version, kind = key.split("/")
            root = close(copy.deepcopy(schema))
            # Root metadata is Kubernetes' ObjectMeta, which CRDs leave open on purpose.
            root.setdefault("properties", {})["metadata"] = {"type": "object"}
            root["required"] = sorted({*root.get("required", []), "apiVersion", "kind"})
            found[(f"{group}/{version}", kind)] = root
    return found


def groups() -> set[str]:
    """API groups the vendored CRDs cover; a resource of such a group must match one."""
    return {api.split("/")[0] for api, _ in schemas()}
