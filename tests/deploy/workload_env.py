"""The environment each service's container gets, built the way Kubernetes and Compose build it.

The settings test loads every service's real settings class from exactly this environment, so
what it proves is what a pod or a compose container would see at start-up:

- Kubernetes: `envFrom` ConfigMaps and Secrets in order, then `env` (literal values with `$(VAR)`
  expansion, `secretKeyRef`, `configMapKeyRef`, `fieldRef`), as the kubelet does. Secrets come
  from the rendered manifests; a Secret that an ExternalSecret materialises gets its values from
  the example Secrets (what the secret store must hold); Secrets that an operator writes are
  derived from the custom resource that makes them. A missing ConfigMap, Secret or key fails.
- Compose: the service's `environment`, with `${VAR}`, `${VAR:-default}` and `${VAR:?error}`
  interpolated from the example env file, as `docker compose` does with a filled-in `.env`.

Every placeholder (`CHANGE_ME`) is replaced by a fresh value of 48 random URL-safe bytes, so a
rule that wants long random production secrets sees what an operator following the docs gives;
`CHANGE_ME_TO_AN_ARGON2_HASH` (agents' and reviewers' passwords) by an argon2id hash of such a
value.
"""

from __future__ import annotations

import base64
import importlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SECRETS_EXAMPLE = K8S / "secrets" / "example" / "secrets.yaml"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"

PLACEHOLDER = "CHANGE_ME"
HASH_PLACEHOLDER = "CHANGE_ME_TO_AN_ARGON2_HASH"

Doc = dict[str, Any]


class EnvError(Exception):
    """The environment cannot be built: a reference points at nothing."""


@dataclass(frozen=True)
class Value:
    """One environment variable's value and whether it came from a secret."""

    text: str
    secret: bool
    source: str


def random_secret() -> str:
    """What the docs tell operators to generate: 48 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(48)


def password_hash() -> str:
    """What the docs tell operators to store for an agent: an argon2id hash of a password.

    Where argon2-cffi is not installed, the settings do not ask for hashes either, and a
    random secret stands in.
    """
    try:
        argon2 = importlib.import_module("argon2")
    except ImportError:
        return random_secret()
    return str(argon2.PasswordHasher().hash(random_secret()))


def fill(text: str) -> str:
    """`text` with every placeholder replaced by its own fresh random value."""
    text = re.sub(HASH_PLACEHOLDER, lambda _: password_hash(), text)
    return re.sub(PLACEHOLDER, lambda _: random_secret(), text)


def secret_data(doc: Doc) -> dict[str, str]:
    """A Secret's keys and values, `data` decoded and `stringData` on top."""
    data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    data.update(doc.get("stringData") or {})
    return data


def example_secrets() -> dict[str, dict[str, str]]:
    """The example Secrets, placeholders filled, by name."""
    docs = [d for d in yaml.safe_load_all(SECRETS_EXAMPLE.read_text()) if d]
    return {d["metadata"]["name"]: {k: fill(v) for k, v in secret_data(d).items()} for d in docs}


def operator_secrets(docs: list[Doc], namespace: str) -> dict[str, dict[str, str]]:
    """Secrets the operators write, derived from the custom resources that ask for them.

    CloudNativePG: `<cluster>-app` for the application owner (keys per its "Connecting from an
    application" docs). Strimzi: `<kafka>-cluster-ca-cert` for the cluster CA, and one Secret
    per KafkaUser named like the user (`password`, `sasl.jaas.config` for SCRAM-SHA-512).
    """
    made: dict[str, dict[str, str]] = {}
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Cluster" and doc["apiVersion"].startswith("postgresql.cnpg.io/"):
            initdb = doc["spec"].get("bootstrap", {}).get("initdb", {})
            db, owner = initdb.get("database", "app"), initdb.get("owner", "app")
            password, host = random_secret(), f"{name}-rw.{namespace}"
            made[f"{name}-app"] = {
                "username": owner,
                "password": password,
                "host": host,
                "port": "5432",
                "dbname": db,
                "uri": f"postgresql://{owner}:{password}@{host}:5432/{db}",
            }
        elif kind == "Kafka" and doc["apiVersion"].startswith("kafka.strimzi.io/"):
            made[f"{name}-cluster-ca-cert"] = {
                "ca.crt": "-----BEGIN CERTIFICATE-----\n...",
                "ca.p12": "",
                "ca.password": random_secret(),
            }
        elif kind == "KafkaUser" and doc["apiVersion"].startswith("kafka.strimzi.io/"):
            auth = doc["spec"].get("authentication", {}).get("type")
            if auth == "scram-sha-512":
                password = random_secret()
                made[name] = {
                    "password": password,
                    "sasl.jaas.config": (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required "
                        f'username="{name}" password="{password}";'
                    ),
                }
    return made


def cluster_secrets(docs: list[Doc], namespace: str) -> dict[str, dict[str, str]]:
    """Every Secret a pod in this rendering can reference, with values, by name."""
    found = operator_secrets(docs, namespace)
    examples = example_secrets()
    for doc in docs:
        if doc["kind"] == "Secret":
            found[doc["metadata"]["name"]] = {k: fill(v) for k, v in secret_data(doc).items()}
        elif doc["kind"] == "ExternalSecret":
            target = doc["spec"].get("target", {}).get("name", doc["metadata"]["name"])
            if target not in examples:
                raise EnvError(f"ExternalSecret {target!r} has no example Secret")
            values = {}
            for item in doc["spec"].get("data", []):
                key = item["secretKey"]
                if key not in examples[target]:
                    raise EnvError(f"ExternalSecret {target}/{key} is not in the example")
                values[key] = examples[target][key]
            found[target] = values
    return found


def _ref(store: dict[str, dict[str, str]], ref: Doc, what: str) -> str | None:
    name, key = ref["name"], ref["key"]
    if name not in store or key not in store[name]:
        if ref.get("optional"):
            return None
        raise EnvError(f"{what} {name}/{key} does not exist")
    return store[name][key]


def _expand(text: str, env: dict[str, Value]) -> str:
    # Kubernetes expands $(VAR) from variables defined earlier; $$ escapes.
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name].text if name in env else m.group(0)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)


def container_env(
    docs: list[Doc], container: Doc, namespace: str, store: dict[str, dict[str, str]]
) -> dict[str, Value]:
    """The environment the kubelet gives `container`."""
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, Value] = {}
    for item in container.get("envFrom", []):
        prefix = item.get("prefix", "")
        if "configMapRef" in item:
            ref, source, secret = item["configMapRef"], maps, False
        else:
            ref, source, secret = item["secretRef"], store, True
        if ref["name"] not in source:
            if ref.get("optional"):
                continue
            raise EnvError(f"envFrom {ref['name']} does not exist")
        for key, text in source[ref["name"]].items():
            env[prefix + key] = Value(str(text), secret, ref["name"])
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = Value(_expand(str(item.get("value", "")), env), False, "literal")
            continue
        value = _value_from(item["valueFrom"], maps, store, namespace)
        if value is not None:
            env[name] = value
    return env


def _value_from(
    source: Doc, maps: dict[str, dict[str, str]], store: dict[str, dict[str, str]], namespace: str
) -> Value | None:
    """One `valueFrom`, resolved; None for an optional reference to nothing."""
    if "secretKeyRef" in source:
        text = _ref(store, source["secretKeyRef"], "secretKeyRef")
        return None if text is None else Value(text, True, source["secretKeyRef"]["name"])
    if "configMapKeyRef" in source:
        text = _ref(maps, source["configMapKeyRef"], "configMapKeyRef")
        return None if text is None else Value(text, False, source["configMapKeyRef"]["name"])
    if source.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
        return Value(namespace, False, "fieldRef")
    return Value("downward-api-value", False, "fieldRef")


def mounted_files(pod: Doc, container: Doc, store: dict[str, dict[str, str]]) -> set[str]:
    """Paths of the files Secret and ConfigMap volumes put into the container."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files: set[str] = set()
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume:
            keys = [i["path"] for i in volume["secret"].get("items", [])] or list(
                store.get(volume["secret"]["secretName"], {})
            )
        elif "configMap" in volume:
            keys = [i["path"] for i in volume["configMap"].get("items", [])]
        else:
            continue
        files.update(f"{mount['mountPath'].rstrip('/')}/{k}" for k in keys)
    return files


_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose_example_env() -> dict[str, str]:
    """The example `.env` for compose, placeholders filled."""
    values = {}
    for raw in COMPOSE_ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = fill(value.strip().strip("'"))
    return values


def interpolate(text: str, dotenv: dict[str, str]) -> tuple[str, bool]:
    """`text` as compose interpolates it, and whether any part came from the `.env` file."""
    from_env = False

    def one(m: re.Match[str]) -> str:
        nonlocal from_env
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = dotenv.get(name)
        if op and op.endswith("-") and not value:
            return str(arg)
        if value is None:
            raise EnvError(f"compose needs ${{{name}}}, which the example env file lacks")
        from_env = True
        return value

    return _INTERPOLATION.sub(one, text), from_env


def compose_env(service: str) -> dict[str, Value]:
    """The environment docker compose gives `service`, from a filled-in example `.env`."""
    doc = yaml.safe_load(COMPOSE.read_text())
    raw = doc["services"][service].get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    dotenv = compose_example_env()
    env = {}
    for key, text in raw.items():
        value, from_env = interpolate(str(text), dotenv)
        env[key] = Value(value, from_env, "compose .env" if from_env else "compose file")
    return env
