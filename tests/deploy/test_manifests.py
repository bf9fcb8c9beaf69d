"""The Kubernetes manifests render offline, match the schemas and follow the platform's rules."""

from __future__ import annotations

import subprocess
from collections import Counter
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from cbd.serve import SERVICES
from shared.topics import ALL_TOPICS
from tests.deploy.conftest import OVERLAYS, render, tool
from tests.deploy.crds import SCHEMAS
from tests.deploy.observability import DEPLOY

K8S_VERSION = "1.31"
# Names a value that must come from a Secret, never be written into a manifest.
SECRET_ENDINGS = ("PASSWORD", "SECRET", "TOKEN", "DSN", "KEY")
# URLs that embed a password, and agent ids with their passwords.
SECRET_NAMES = {"CBD_REDIS_URL", "CBD_ESCALATION_AGENTS"}


def is_secret(name: str) -> bool:
    """Whether an environment variable of this name carries a secret."""
    words = name.upper().split("_")
    return name.upper() in SECRET_NAMES or words[-1] in SECRET_ENDINGS or "SECRET" in words


CONSUMERS = {"emotion", "memory", "escalation", "generation", "audit"}

Doc = dict[str, Any]


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    """The documents of one kind, by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(deployment: Doc) -> list[Doc]:
    """A Deployment's containers."""
    found: list[Doc] = deployment["spec"]["template"]["spec"]["containers"]
    return found


def schema_errors(doc: Doc) -> str | None:
    """Why `doc` fails its schema (Kubernetes' own or the CRD's), or None."""
    key = (doc["apiVersion"], doc["kind"])
    if key in SCHEMAS:
        try:
            jsonschema.validate(doc, SCHEMAS[key])
        except jsonschema.ValidationError as exc:
            return f"{key}: {exc.message} at {list(exc.absolute_path)}"
        return None
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{key}: {exc.message} at {list(exc.path)}"
    return None


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_resource_matches_its_schema(rendered: dict[str, list[Doc]], target: str) -> None:
    docs = rendered[target]
    assert len(docs) > 50
    errors = {f"{d['kind']}/{d['metadata']['name']}": schema_errors(d) for d in docs}
    assert {k: v for k, v in errors.items() if v} == {}


def test_schema_check_rejects_a_broken_resource(rendered: dict[str, list[Doc]]) -> None:
    deployment = dict(of_kind(rendered["base"], "Deployment")["ingest"])
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    assert schema_errors(broken) is not None
    topic = of_kind(rendered["base"], "KafkaTopic")["turn-received"]
    assert schema_errors({**topic, "spec": {**topic["spec"], "partition": 3}}) is not None
    assert schema_errors({**topic, "spec": {"partitions": 3, "replicas": 1}}) is not None


def test_kustomize_refuses_a_missing_resource(tmp_path: Any) -> None:
    kubectl = tool("kubectl", "kubectl renders kustomizations offline")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "kustomization.yaml").write_text("resources:\n  - nowhere.yaml\n")
    with pytest.raises(subprocess.CalledProcessError):
        render(kubectl, str(bad))


@pytest.mark.parametrize("target", OVERLAYS)
def test_each_service_has_its_full_set(rendered: dict[str, list[Doc]], target: str) -> None:
    docs = rendered[target]
    for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"):
        assert set(SERVICES) <= set(of_kind(docs, kind)), kind
    assert {f"cbd-{s}" for s in SERVICES} <= set(of_kind(docs, "ConfigMap"))
    names = Counter((d["kind"], d["metadata"]["name"]) for d in docs)
    assert [k for k, n in names.items() if n > 1] == []


@pytest.mark.parametrize("target", OVERLAYS)
def test_pods_are_restricted_probed_and_bounded(
    rendered: dict[str, list[Doc]], target: str
) -> None:
    for name, deployment in of_kind(rendered[target], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in containers(deployment):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{name} lacks {probe}"
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
        if name in SERVICES:
            c = containers(deployment)[0]
            # Liveness checks nothing external; readiness checks the dependencies.
            assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("target", OVERLAYS)
def test_secrets_are_referenced_never_inlined(rendered: dict[str, list[Doc]], target: str) -> None:
    docs = rendered[target]
    assert of_kind(docs, "Secret") == {}
    for cm in of_kind(docs, "ConfigMap").values():
        for key in cm.get("data", {}):
            assert not is_secret(key), f"{key} in a ConfigMap"
    for name, deployment in of_kind(docs, "Deployment").items():
        for c in containers(deployment):
            for env in c.get("env", []):
                if is_secret(env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), f"{name}: {env['name']}"


def test_services_get_their_secrets(rendered: dict[str, list[Doc]]) -> None:
    deployments = of_kind(rendered["overlays/prod"], "Deployment")

    def secret_env(service: str) -> set[str]:
        c = containers(deployments[service])[0]
        return {e["name"] for e in c.get("env", []) if "valueFrom" in e}

    for service in ("memory", "escalation", "audit"):
        assert "CBD_PG_DSN" in secret_env(service)
    for service in ("ingest", "emotion", "memory", "escalation", "generation"):
        assert "CBD_REDIS_URL" in secret_env(service)
    assert {"CBD_ESCALATION_AGENTS", "CBD_ESCALATION_AGENT_TOKEN_SECRET"} <= secret_env(
        "escalation"
    )


def test_vllm_runs_on_a_gpu_with_prefix_caching(rendered: dict[str, list[Doc]]) -> None:
    for target in OVERLAYS:
        vllm = of_kind(rendered[target], "Deployment")["vllm"]
        c = containers(vllm)[0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert "--enable-prefix-caching" in " ".join(c["args"])
        startup = c["startupProbe"]
        # Loading weights takes minutes: at least 10 of them before liveness may kill it.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        volumes = {v["name"]: v for v in vllm["spec"]["template"]["spec"]["volumes"]}
        assert "persistentVolumeClaim" in volumes["model-cache"]
        assert "vllm-model-cache" in of_kind(rendered[target], "PersistentVolumeClaim")


def test_every_topic_is_an_operator_resource(rendered: dict[str, list[Doc]]) -> None:
    for target in OVERLAYS:
        topics = {
            t["spec"]["topicName"]: t for t in of_kind(rendered[target], "KafkaTopic").values()
        }
        assert set(topics) == {t.value for t in ALL_TOPICS}
        for spec in (t["spec"] for t in topics.values()):
            assert spec["partitions"] >= 3
            assert spec["config"]["retention.ms"] >= 3600 * 1000
    assert (
        of_kind(rendered["base"], "Kafka")["cbd-kafka"]["spec"]["kafka"]["config"][
            "auto.create.topics.enable"
        ]
        is False
    )
    config = of_kind(rendered["base"], "ConfigMap")["cbd-config"]["data"]
    assert config["CBD_KAFKA_CREATE_TOPICS"] == "false"


def test_consumers_scale_on_lag_and_ingest_on_cpu(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/prod"]
    scaled = of_kind(docs, "ScaledObject")
    assert set(scaled) == CONSUMERS
    partitions = {
        t["spec"]["topicName"]: t["spec"]["partitions"]
        for t in of_kind(docs, "KafkaTopic").values()
    }
    for name, so in scaled.items():
        assert so["spec"]["scaleTargetRef"]["name"] == name
        topics = [t["metadata"].get("topic") for t in so["spec"]["triggers"]]
        # Replicas past the partition count of every topic the service reads would idle.
        most = max(partitions.get(t, 0) for t in topics) if None not in topics else 12
        assert so["spec"]["maxReplicaCount"] <= most, name
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            if name == "audit" and "topic" not in meta:
                assert meta["consumerGroup"] == "cbd-audit"  # the ledger: every topic
            else:
                # The group each subscription uses (shared/service.py Infra.subscribe).
                assert meta["consumerGroup"] == f"cbd-{name}.{meta['topic']}"
    hpa = of_kind(docs, "HorizontalPodAutoscaler")["ingest"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ingest"


def test_network_is_default_deny(rendered: dict[str, list[Doc]]) -> None:
    policies = of_kind(rendered["overlays/prod"], "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    selected = deny["podSelector"]["matchExpressions"][0]["values"]
    assert set(SERVICES) <= set(selected)
    assert "allow-prometheus-scrape" in policies
    assert "allow-dns" in policies


def test_monitoring_scrapes_every_service(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/prod"]
    monitor = of_kind(docs, "ServiceMonitor")["care-by-design"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    services = of_kind(docs, "Service")
    for name in SERVICES:
        labels = services[name]["metadata"]["labels"]
        assert wanted.items() <= labels.items(), name
    ports = {p["name"] for s in SERVICES for p in services[s]["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    assert "care-by-design" in of_kind(docs, "PrometheusRule")
    dashboards = of_kind(docs, "ConfigMap")["cbd-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert len(dashboards["data"]) == len(
        list((DEPLOY / "k8s/base/monitoring/dashboards").glob("*.json"))
    )


def test_overlays_differ_where_they_should(rendered: dict[str, list[Doc]]) -> None:
    dev, prod = rendered["overlays/dev"], rendered["overlays/prod"]
    assert {d["metadata"].get("namespace") for d in dev if d["kind"] != "Namespace"} == {"cbd-dev"}
    assert of_kind(dev, "KafkaNodePool")["dual-role"]["spec"]["replicas"] == 1
    assert all(t["spec"]["replicas"] == 1 for t in of_kind(dev, "KafkaTopic").values())
    assert all(t["spec"]["replicas"] == 3 for t in of_kind(prod, "KafkaTopic").values())
    for name in SERVICES:
        image = containers(of_kind(prod, "Deployment")[name])[0]["image"]
        assert image == f"care-by-design/{name}:0.1.0", "prod pins its image tags"


def test_yaml_is_lint_clean() -> None:
    yamllint = tool("yamllint", "pip install yamllint (the [dev] extra)")
    result = subprocess.run(
        [
            yamllint,
            "--strict",
            "-c",
            str(DEPLOY / "yamllint.yml"),
            str(DEPLOY),
            str(DEPLOY.parent / "docker-compose.yml"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
