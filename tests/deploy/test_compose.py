"""docker-compose.yml: valid against the compose specification, healthy start-up order."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from cbd.serve import SERVICES
from tests.deploy.conftest import tool
from tests.deploy.observability import DEPLOY

COMPOSE = DEPLOY.parent / "docker-compose.yml"
INFRA = {"kafka", "postgres", "redis"}


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the compose-spec schema it vendors (no download)."""
    return subprocess.run(
        [
            tool("check-jsonschema", "the [dev] extra"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def compose() -> dict[str, Any]:
    """The compose file, anchors and merges resolved."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_matches_the_compose_spec() -> None:
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_spec_check_rejects_a_broken_file(tmp_path: Path) -> None:
    doc = compose()
    doc["services"]["audit"]["depends_on"]["kafka"]["condition"] = "service_ready"
    doc["services"]["audit"]["healthcheck"]["retries"] = "many"
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(doc))
    assert validate(bad).returncode != 0


def test_every_service_is_built_checked_and_waits_for_healthy_infra() -> None:
    services = compose()["services"]
    for name in SERVICES:
        svc = services[name]
        dockerfile = DEPLOY.parent / svc["build"]["dockerfile"]
        assert dockerfile.exists(), dockerfile
        assert svc["image"].startswith(f"care-by-design/{name}:")
        assert "readyz" in " ".join(svc["healthcheck"]["test"])
        for dep in INFRA:
            assert svc["depends_on"][dep]["condition"] == "service_healthy", (name, dep)
        assert svc["read_only"] is True
        assert svc["cap_drop"] == ["ALL"]
    for name in (*INFRA, "prometheus", "grafana", "vllm", "llm-cpu"):
        assert "healthcheck" in services[name], name


def test_secrets_come_from_the_environment() -> None:
    text = COMPOSE.read_text()
    services = compose()["services"]
    env = services["memory"]["environment"]
    assert "${CBD_PG_PASSWORD:?" in env["CBD_PG_DSN"]
    assert "${CBD_REDIS_PASSWORD:?" in env["CBD_REDIS_URL"]
    assert "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?" in text
    assert services["escalation"]["environment"]["CBD_ESCALATION_AGENT_TOKEN_SECRET"].startswith(
        "${CBD_AGENT_TOKEN_SECRET:?"
    )


def test_llm_profiles_gpu_and_cpu_answer_as_one_name() -> None:
    services = compose()["services"]
    vllm, cpu = services["vllm"], services["llm-cpu"]
    assert vllm["profiles"] == ["gpu"]
    assert cpu["profiles"] == ["cpu"]
    assert "--enable-prefix-caching" in vllm["command"]
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for svc in (vllm, cpu):
        assert "llm" in svc["networks"]["default"]["aliases"]
    generation = services["generation"]
    assert generation["environment"]["CBD_GENERATION_LLM_BASE_URL"] == "http://llm:8000/v1"
    for llm in ("vllm", "llm-cpu"):
        assert generation["depends_on"][llm]["required"] is False


def test_prometheus_scrapes_every_service_and_grafana_is_provisioned() -> None:
    services = compose()["services"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    for name in SERVICES:
        assert jobs[name] == [f"{name}:8000"]
    assert config["rule_files"] == [
        "/etc/prometheus/alerts.yml",
        "/etc/prometheus/care-alerts.yml",
    ]
    mounts = " ".join(services["prometheus"]["volumes"])
    for rules in ("alerts.yml", "care-alerts.yml"):
        assert f"./deploy/prometheus/{rules}:/etc/prometheus/{rules}" in mounts
    grafana = services["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    # promtool resolves rule_files; point it at the repo's file instead of the container path.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [
        str(DEPLOY / "prometheus" / Path(path).name) for path in config["rule_files"]
    ]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [tool("promtool", "apt-get install prometheus"), "check", "config", str(local)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
