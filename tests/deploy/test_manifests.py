"""The Kubernetes manifests render offline, match the schemas and follow the platform's rules."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from cbd.serve import SERVICES
from shared.topics import ALL_TOPICS
from tests.deploy.conftest import OVERLAYS, render, tool
from tests.deploy.crds import groups, schemas
from tests.deploy.observability import DEPLOY
from tests.deploy.test_production_settings import settings_class
from tests.deploy.workload_env import PLACEHOLDER, SECRETS_EXAMPLE

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
    """Why `doc` fails its schema (Kubernetes' own or the operator's CRD), or None."""
    key = (doc["apiVersion"], doc["kind"])
    if key in schemas():
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft7Validator(schemas()[key]).iter_errors(doc)
        )
        if error is not None:
            return f"{key}: {error.message} at {list(error.absolute_path)}"
        return None
    if doc["apiVersion"].split("/")[0] in groups():
        return f"{key}: the operator's current CRDs do not serve this version or kind"
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
    # A version the operator no longer serves (Strimzi 1.x serves only v1) is refused too.
    assert schema_errors({**topic, "apiVersion": "kafka.strimzi.io/v1beta2"}) is not None
    user = of_kind(rendered["base"], "KafkaUser")["cbd-audit"]
    acl = {**user["spec"]["authorization"]["acls"][0], "operation": "Read"}
    broken_user = {
        **user,
        "spec": {**user["spec"], "authorization": {"type": "simple", "acls": [acl]}},
    }
    assert schema_errors(broken_user) is not None


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
    for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "KafkaUser"):
        present = {n.removeprefix("cbd-") for n in of_kind(docs, kind)}
        assert set(SERVICES) <= present, kind
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
    # The only Secrets a rendering may carry are the example's placeholders (dev); values come
    # from the secret store (ExternalSecrets, prod) or the operators.
    example = {d["metadata"]["name"] for d in yaml.safe_load_all(SECRETS_EXAMPLE.read_text())}
    for name, secret in of_kind(docs, "Secret").items():
        assert name in example, name
        assert all(PLACEHOLDER in v for v in secret["stringData"].values()), name
    for cm in of_kind(docs, "ConfigMap").values():
        for key in cm.get("data", {}):
            assert not is_secret(key), f"{key} in a ConfigMap"
    for name, deployment in of_kind(docs, "Deployment").items():
        for c in containers(deployment):
            for env in c.get("env", []):
                if is_secret(env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), f"{name}: {env['name']}"


def test_external_secrets_and_the_example_list_the_same_keys(
    rendered: dict[str, list[Doc]],
) -> None:
    example = {
        d["metadata"]["name"]: set(d["stringData"])
        for d in yaml.safe_load_all(SECRETS_EXAMPLE.read_text())
    }
    external = {
        e["spec"]["target"]["name"]: {item["secretKey"] for item in e["spec"]["data"]}
        for e in of_kind(rendered["overlays/prod"], "ExternalSecret").values()
    }
    assert external == example
    assert of_kind(rendered["overlays/prod"], "Secret") == {}
    assert set(of_kind(rendered["overlays/dev"], "Secret")) == set(example)


@pytest.mark.parametrize("target", OVERLAYS)
def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(
    rendered: dict[str, list[Doc]], target: str
) -> None:
    docs = rendered[target]
    scaled = {so["spec"]["scaleTargetRef"]["name"] for so in of_kind(docs, "ScaledObject").values()}
    hpas = of_kind(docs, "HorizontalPodAutoscaler").values()
    scaled |= {h["spec"]["scaleTargetRef"]["name"] for h in hpas}
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == scaled, "every Deployment is autoscaled"
    for name, deployment in deployments.items():
        # `kubectl apply` of a replica count would reset what the autoscaler chose.
        assert "replicas" not in deployment["spec"], name


@pytest.mark.parametrize("target", OVERLAYS)
def test_disruption_budgets_never_block_a_drain_on_unready_pods(
    rendered: dict[str, list[Doc]], target: str
) -> None:
    budgets = of_kind(rendered[target], "PodDisruptionBudget")
    assert set(SERVICES) | {"vllm"} <= set(budgets)
    for name, pdb in budgets.items():
        # With the default (IfHealthyBudget), pods made unready by a dependency outage count
        # against the budget and every eviction is refused until the dependency is back.
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", name
        assert pdb["spec"]["maxUnavailable"] == 1, name


def test_vllm_runs_as_a_known_user_and_keeps_capacity(rendered: dict[str, list[Doc]]) -> None:
    for target in OVERLAYS:
        docs = rendered[target]
        vllm = of_kind(docs, "Deployment")["vllm"]
        c = containers(vllm)[0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert "--enable-prefix-caching" in " ".join(c["args"])
        env = of_kind(docs, "ConfigMap")["cbd-vllm"]["data"]
        # An unknown uid has no passwd entry: USER and HOME stand in, caches are writable.
        writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] != "shm"}
        assert env["USER"]
        for path in ("HOME", "HF_HOME", "VLLM_CACHE_ROOT", "XDG_CACHE_HOME", "TRITON_CACHE_DIR"):
            assert any(env[path].startswith(f"{m}/") for m in writable), path
        strategy = vllm["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        startup = c["startupProbe"]
        # Loading weights takes minutes: at least 10 of them before liveness may kill it.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        assert startup["httpGet"]["path"] == c["readinessProbe"]["httpGet"]["path"] == "/health"
        volumes = {v["name"]: v for v in vllm["spec"]["template"]["spec"]["volumes"]}
        claim = volumes["model-cache"]["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert claim["accessModes"] == ["ReadWriteOnce"]
        assert claim["storageClassName"]
        scaler = of_kind(docs, "ScaledObject")["vllm"]["spec"]["triggers"][0]
        namespace = next(iter(of_kind(docs, "Namespace")))
        assert scaler["type"] == "prometheus"
        assert scaler["metadata"]["query"] == (
            f'sum(vllm:num_requests_waiting{{namespace="{namespace}"}})'
        )


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
    scaled = {k: v for k, v in of_kind(docs, "ScaledObject").items() if k != "vllm"}
    assert set(scaled) == CONSUMERS
    auths = of_kind(docs, "TriggerAuthentication")
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
            # KEDA's scaler resolves the address from KEDA's namespace, over TLS and SCRAM.
            host = meta["bootstrapServers"].split(":")[0]
            assert host == "cbd-kafka-kafka-bootstrap.care-by-design.svc", name
            assert (meta["tls"], meta["sasl"]) == ("enable", "scram_sha512"), name
            auth = auths[trigger["authenticationRef"]["name"]]["spec"]
            params = {r["parameter"] for r in auth["secretTargetRef"] + auth["configMapTargetRef"]}
            assert params == {"username", "password", "ca"}, name
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
    # Scraped on the metrics port, which every service's Service exposes.
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    for name in SERVICES:
        ports = {p["name"]: p["targetPort"] for p in services[name]["spec"]["ports"]}
        assert ports.get("metrics") == "metrics", name
    # Prometheus may reach that port and nothing else; the ingress never reaches it.
    policies = of_kind(docs, "NetworkPolicy")
    scrape = policies["allow-prometheus-scrape"]["spec"]
    assert set(scrape["podSelector"]["matchExpressions"][0]["values"]) == set(SERVICES)
    assert [p["port"] for rule in scrape["ingress"] for p in rule["ports"]] == ["metrics"]
    edge = policies["allow-edge"]["spec"]
    assert [p["port"] for rule in edge["ingress"] for p in rule["ports"]] == ["http"]
    assert "care-by-design" in of_kind(docs, "PrometheusRule")
    dashboards = of_kind(docs, "ConfigMap")["cbd-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert len(dashboards["data"]) == len(
        list((DEPLOY / "k8s/base/monitoring/dashboards").glob("*.json"))
    )


def test_overlays_differ_where_they_should(rendered: dict[str, list[Doc]]) -> None:
    dev, prod = rendered["overlays/dev"], rendered["overlays/prod"]
    assert {d["metadata"].get("namespace") for d in dev if d["kind"] != "Namespace"} == {"cbd-dev"}
    # The namespace is rewritten wherever it is spelt out: KEDA's addresses, vLLM's scaling
    # query, the services' bootstrap address and the header ConfigMap's reference.
    spelt = {
        t["metadata"].get("bootstrapServers", t["metadata"].get("query"))
        for so in of_kind(dev, "ScaledObject").values()
        for t in so["spec"]["triggers"]
    }
    spelt.add(of_kind(dev, "ConfigMap")["cbd-config"]["data"]["CBD_KAFKA_BOOTSTRAP_SERVERS"])
    spelt |= {
        i["metadata"]["annotations"]["nginx.ingress.kubernetes.io/custom-headers"]
        for i in of_kind(dev, "Ingress").values()
    }
    assert all("cbd-dev" in s and "care-by-design" not in s for s in spelt), spelt
    for pool in ("controllers", "brokers"):
        assert of_kind(dev, "KafkaNodePool")[pool]["spec"]["replicas"] == 1
        assert of_kind(prod, "KafkaNodePool")[pool]["spec"]["replicas"] == 3
    assert all(t["spec"]["replicas"] == 1 for t in of_kind(dev, "KafkaTopic").values())
    assert all(t["spec"]["replicas"] == 3 for t in of_kind(prod, "KafkaTopic").values())
    for name in SERVICES:
        registry = f"registry.example.com/care-by-design/{name}"
        assert containers(of_kind(dev, "Deployment")[name])[0]["image"] == f"{registry}:dev"
        image = containers(of_kind(prod, "Deployment")[name])[0]["image"]
        assert re.fullmatch(re.escape(registry) + r"@sha256:[0-9a-f]{64}", image), (
            "prod pins images by digest"
        )


def test_kafka_runs_current_strimzi_with_separate_roles_and_tls(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["overlays/prod"]
    pools = of_kind(docs, "KafkaNodePool")
    assert {p: pools[p]["spec"]["roles"] for p in pools} == {
        "controllers": ["controller"],
        "brokers": ["broker"],
    }
    kafka = of_kind(docs, "Kafka")["cbd-kafka"]["spec"]["kafka"]
    # Strimzi 1.2 supports Kafka 4.2.0 to 4.3.1 (kafka-versions.yaml at its release).
    assert kafka["version"] in {"4.2.0", "4.2.1", "4.3.0", "4.3.1"}
    assert kafka["metadataVersion"].startswith(".".join(kafka["version"].split(".")[:2]))
    assert [(li["tls"], li["authentication"]["type"]) for li in kafka["listeners"]] == [
        (True, "scram-sha-512")
    ]
    assert kafka["authorization"]["type"] == "simple"
    config = of_kind(docs, "ConfigMap")["cbd-config"]["data"]
    port = str(kafka["listeners"][0]["port"])
    assert config["CBD_KAFKA_BOOTSTRAP_SERVERS"].endswith(f":{port}")


def test_ingress_serves_the_edge_and_console_over_tls(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/prod"]
    ingresses = of_kind(docs, "Ingress")
    backends = {}
    for ingress in ingresses.values():
        spec, notes = ingress["spec"], ingress["metadata"]["annotations"]
        hosts = {r["host"] for r in spec["rules"]}
        assert hosts <= {h for t in spec["tls"] for h in t["hosts"]}, "every host has TLS"
        # WebSockets (chat and the agents' live transcript) outlive nginx's 60 s default.
        assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
        headers = notes["nginx.ingress.kubernetes.io/custom-headers"]
        assert headers == "care-by-design/cbd-edge-headers"
        for rule in spec["rules"]:
            for path in rule["http"]["paths"]:
                backends[path["path"]] = path["backend"]["service"]["name"]
    assert backends["/v1/conversations"] == "ingest"
    assert backends["/console"] == backends["/v1/agent"] == "escalation"
    # Probes, metrics and the memory admin API are never published.
    assert not {"/metrics", "/readyz", "/livez"} & set(backends)
    assert "memory" not in backends.values()
    edge = of_kind(docs, "ConfigMap")["cbd-edge-headers"]["data"]
    assert edge["Strict-Transport-Security"].startswith("max-age=")
    # The apps send each page's policy (tests/unit/test_page_security.py); a second, looser
    # one from the ingress would only confuse whoever reads the headers.
    assert "Content-Security-Policy" not in edge


def test_network_policies_follow_what_each_service_uses(rendered: dict[str, list[Doc]]) -> None:
    # Derived from the settings classes: a service reaches PostgreSQL or Redis if and only if
    # its settings use them.
    policies = of_kind(rendered["overlays/prod"], "NetworkPolicy")

    def selected(policy: str) -> set[str]:
        return set(policies[policy]["spec"]["podSelector"]["matchExpressions"][0]["values"])

    assert selected("to-postgres") == {s for s in SERVICES if settings_class(s).uses_postgres}
    assert selected("to-redis") == {s for s in SERVICES if settings_class(s).uses_redis}
    assert selected("to-kafka") == set(SERVICES)
    clients = policies["postgres-clients"]["spec"]["ingress"][0]["from"][0]["podSelector"]
    assert set(clients["matchExpressions"][0]["values"]) == selected("to-postgres")


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
