"""Each service's real settings load, in production mode, from exactly what the manifests give it.

What a service needs is read from its settings class (services/<service>/settings.py): its own
validators decide whether the environment is enough, the environment variable names it reads
come from its fields and env prefixes, and which fields are secrets from their types. Nothing
here lists a service's secrets by hand, so a secret another engineer adds tomorrow fails this
test until the manifests, the example Secrets and the compose file give it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import typing
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from cbd.serve import SERVICES
from shared.settings import ServiceSettings
from tests.deploy.workload_env import (
    PLACEHOLDER,
    EnvError,
    Value,
    cluster_secrets,
    compose_env,
    container_env,
    mounted_files,
)

OVERLAYS = ("overlays/dev", "overlays/prod")
Doc = dict[str, Any]


def settings_class(service: str) -> type[ServiceSettings]:
    """The ServiceSettings subclass a service's settings module defines."""
    module = importlib.import_module(f"services.{service}.settings")
    found = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, ServiceSettings) and cls.__module__ == module.__name__
    ]
    assert len(found) == 1, f"services/{service}/settings.py defines {found}"
    return found[0]


def _env_names(cls: type[BaseSettings]) -> Iterator[tuple[str, Any]]:
    """(variable name, field annotation) for every variable a settings class reads."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names = [c for c in choices if isinstance(c, str)]
        elif isinstance(alias, str):
            names = [alias]
        else:
            names = [f"{prefix}{name}"]
        for env in names:
            yield env.upper(), field.annotation
        annotation = field.annotation
        if inspect.isclass(annotation) and issubclass(annotation, BaseSettings):
            # Nested settings (Kafka, PostgreSQL, Redis) read their own prefixed variables.
            yield from _env_names(annotation)


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads."""
    return {name for name, _ in _env_names(cls)}


def _mentions_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_mentions_secret(a) for a in typing.get_args(annotation))


def secret_names(cls: type[BaseSettings]) -> set[str]:
    """The variables whose fields are typed as secrets (SecretStr, alone or inside)."""
    return {name for name, annotation in _env_names(cls) if _mentions_secret(annotation)}


def load(service: str, env: dict[str, Value]) -> ServiceSettings:
    """The service's settings class, built from `env` and nothing else."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.upper().startswith("CBD_"):
                mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value.text)
        return settings_class(service)()


def check_environment(service: str, env: dict[str, Value]) -> ServiceSettings:
    """Load the service in production mode from `env`; fail with what is wrong."""
    cls = settings_class(service)
    unread = {k for k in env if k.upper().startswith("CBD_")} - env_names(cls)
    assert unread == set(), f"{service} is given variables its settings never read"
    exposed = {k for k in secret_names(cls) if k in env and not env[k].secret}
    assert exposed == set(), f"{service}: secret settings written in plain configuration"
    left = {k for k, v in env.items() if PLACEHOLDER in v.text}
    assert left == set(), f"{service}: placeholders left"
    try:
        settings = load(service, env)
    except ValidationError as exc:
        pytest.fail(f"{service} would exit at start-up:\n{exc}")
    assert settings.environment == "production"
    return settings


def pod_environments(docs: list[Doc]) -> dict[str, tuple[Doc, Doc, dict[str, Value]]]:
    """Each service's pod spec, container and environment in one rendering."""
    namespace = next(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")
    store = cluster_secrets(docs, namespace)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    out = {}
    for service in SERVICES:
        pod = deployments[service]["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == service)
        out[service] = (pod, container, container_env(docs, container, namespace, store))
    return out


@pytest.mark.parametrize("target", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_service_starts_from_the_manifests(
    rendered: dict[str, list[Doc]], target: str, service: str
) -> None:
    pod, container, env = pod_environments(rendered[target])[service]
    settings = check_environment(service, env)
    # Files the settings point at (CA bundles) are mounted from a Secret or ConfigMap.
    files = mounted_files(pod, container, cluster_secrets(rendered[target], "x"))
    for name, value in env.items():
        if name.startswith("CBD_") and value.text.startswith("/etc/cbd/"):
            assert value.text in files, f"{service}: {name}={value.text} is not mounted"
    # /metrics on a port of its own, the one the container declares for Prometheus; the
    # main port (routed by the ingress for ingest, escalation and audit) serves none.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == settings.port, service
    assert settings.metrics_port is not None, f"{service}: metrics on the main port"
    assert ports["metrics"] == settings.metrics_port, service
    # Transport in the cluster: Kafka over TLS with the service's own SCRAM user, Redis over
    # TLS with its own ACL user, PostgreSQL with the operator's credentials.
    kafka = settings.kafka
    assert kafka.security_protocol == "SASL_SSL", service
    assert kafka.sasl_mechanism == "SCRAM-SHA-512", service
    assert kafka.sasl_username == f"cbd-{service}", service
    assert kafka.ssl_cafile in files, service
    redis = urlsplit(settings.redis.url.get_secret_value())
    if settings.uses_redis:
        assert redis.scheme == "rediss", f"{service}: Redis without TLS"
        assert redis.username == f"cbd-{service}", f"{service}: not its own Redis ACL user"
    else:
        assert "CBD_REDIS_URL" not in env, f"{service} gets a Redis password it never uses"
    if not settings.uses_postgres:
        assert "CBD_PG_DSN" not in env, f"{service} gets a database password it never uses"


@pytest.mark.parametrize("service", SERVICES)
def test_service_starts_from_the_compose_file(service: str) -> None:
    check_environment(service, compose_env(service))


@pytest.mark.parametrize("service", SERVICES)
def test_the_check_fails_without_the_secrets(rendered: dict[str, list[Doc]], service: str) -> None:
    # The same environment less everything that came from a Secret: production must refuse it,
    # or the check above could pass on defaults.
    _, _, env = pod_environments(rendered["overlays/prod"])[service]
    public = {k: v for k, v in env.items() if not v.secret}
    with pytest.raises(ValidationError):
        load(service, public)


def test_a_missing_secret_key_is_caught(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/prod"]
    namespace = "care-by-design"
    store = cluster_secrets(docs, namespace)
    store["cbd-memory-secrets"].pop("CBD_MEMORY_ADMIN_TOKEN")
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "memory"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = container_env(docs, container, namespace, store)
    with pytest.raises((ValidationError, pytest.fail.Exception)):
        check_environment("memory", env)
    broken = {**container, "env": [*container.get("env", []), _ref_to_nothing()]}
    with pytest.raises(EnvError):
        container_env(docs, broken, namespace, store)


def _ref_to_nothing() -> Doc:
    return {
        "name": "CBD_MEMORY_ADMIN_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "no-such-secret", "key": "token"}},
    }


def test_secret_fields_are_found_from_the_types() -> None:
    # The derivation the checks rely on: it must see nested and dict-valued secrets.
    assert {"CBD_PG_DSN", "CBD_REDIS_URL"} <= secret_names(settings_class("audit"))
    assert "CBD_ESCALATION_AGENTS" in secret_names(settings_class("escalation"))
    assert "CBD_INGEST_API_KEYS" in secret_names(settings_class("ingest"))
    assert "CBD_KAFKA_BOOTSTRAP_SERVERS" in env_names(settings_class("emotion"))
    assert "CBD_ENVIRONMENT" in env_names(settings_class("generation"))
