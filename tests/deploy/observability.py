"""What the deployment tests need to read dashboards, alert rules and /metrics.

The check that matters to SREs: every PromQL expression on a dashboard or in an alert rule
parses, and names only metrics that the services export. Exported names come from the running
services' /metrics at test time (families declared but never incremented are listed there too,
by their HELP/TYPE lines), so a metric another engineer adds tomorrow is known without editing
a list here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "k8s" / "base" / "monitoring" / "dashboards"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
CARE_ALERTS = DEPLOY / "prometheus" / "care-alerts.yml"
CARE_ALERT_TESTS = DEPLOY / "prometheus" / "care-alerts.test.yml"
RULE_FILES = (ALERTS, CARE_ALERTS)
"""Every alert rules file, in the order the PrometheusRule carries their groups."""
PROMETHEUS_RULE = DEPLOY / "k8s" / "base" / "monitoring" / "prometheusrule.yaml"

# Series Prometheus makes itself for every scrape target; no service exports them.
PROMETHEUS_SYNTHETIC = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
)

# Grafana's built-in variables, replaced by a plain duration so the expression parses as
# Prometheus will see it.
_GRAFANA_DURATIONS = re.compile(
    r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}"
)
# The dashboards' own variable: which namespaces (environments) to show. "All" is `.*`.
_NAMESPACE_VARIABLE = re.compile(r"\$namespace\b|\$\{namespace\}")
NAMESPACE_MATCHER = "$namespace"

# Metrics other servers export, which the platform's dashboards and alerts also use. Names
# as their own code registers them (read there, not guessed):
# - vLLM, vllm-project/vllm `vllm/v1/metrics/loggers.py` (PrometheusStatLogger; counters get
#   `_total`, histograms `_bucket`/`_sum`/`_count`). `vllm:time_per_output_token_seconds` was
#   deprecated in 0.11 for `vllm:inter_token_latency_seconds` and is hidden from 0.12 on.
# - Strimzi's kafka-exporter (danielqsj/kafka_exporter): `kafka_consumergroup_lag` and
#   friends, labelled consumergroup, topic, partition.
_VLLM_HISTOGRAMS = (
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:request_time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_inference_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
)
EXTERNAL_METRICS = frozenset(
    {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:num_preemptions_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:request_success_total",
        *(f"{h}{suffix}" for h in _VLLM_HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")),
        "kafka_consumergroup_lag",
        "kafka_consumergroup_lag_sum",
        "kafka_consumergroup_current_offset",
        "kafka_topic_partition_current_offset",
    }
)

# Suffixes prometheus-client adds to a family's name, by family type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gauge": ("",),
    "unknown": ("",),
}


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it lives (dashboard and panel, or alert name)."""

    where: str
    expr: str


def grafana_to_promql(expr: str, duration: str = "5m") -> str:
    """The expression with Grafana's time variables replaced by `duration` and the namespace
    variable by "All" (`.*`)."""
    return _NAMESPACE_VARIABLE.sub(".*", _GRAFANA_DURATIONS.sub(duration, expr))


def unscoped_selectors(expr: str) -> list[str]:
    """Metric selectors in a dashboard expression that ignore the namespace variable."""
    found: list[str] = []
    scoped = _GRAFANA_DURATIONS.sub("5m", expr)

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector) or not node.name:
            return
        if not any(
            m.name == "namespace"
            and m.op == promql_parser.MatchOp.Re
            and m.value == NAMESPACE_MATCHER
            for m in node.matchers.matchers
        ):
            found.append(node.name)

    promql_parser.walk(promql_parser.parse(scoped), visit)
    return found


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects; raises ValueError if it does not parse."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for m in node.matchers.matchers:
                # {__name__="x"} is the same selection written another way.
                if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal:
                    names.add(m.value)

    promql_parser.walk(promql_parser.parse(grafana_to_promql(expr)), visit)
    return names


def load_dashboards(directory: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file in `directory`, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def _panels(panels: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows nest their panels


def dashboard_queries(name: str, dashboard: dict[str, Any]) -> list[Query]:
    """Every panel target's expression in a dashboard."""
    out = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                where = f"{name} / {panel.get('title', panel.get('id'))} [{target.get('refId')}]"
                out.append(Query(where, target["expr"]))
    return out


def all_dashboard_queries(directory: Path = DASHBOARDS) -> list[Query]:
    """Every panel expression of every dashboard."""
    return [q for n, d in load_dashboards(directory).items() for q in dashboard_queries(n, d)]


def rule_queries(rules: dict[str, Any]) -> list[Query]:
    """Every alert and recording rule expression in a Prometheus rules document."""
    out = []
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            out.append(Query(f"{group['name']} / {name}", str(rule["expr"])))
    return out


def load_rules(path: Path = ALERTS) -> dict[str, Any]:
    """A Prometheus rules file."""
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def recorded_names(rules: dict[str, Any]) -> set[str]:
    """Names that recording rules create (a dashboard may use them like exported metrics)."""
    return {
        rule["record"]
        for group in rules.get("groups", [])
        for rule in group.get("rules", [])
        if "record" in rule
    }


def exported_names(metrics_text: str) -> set[str]:
    """Every series name a /metrics page can produce, declared-but-empty families included."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names


def unknown_metrics(queries: Iterable[Query], known: set[str]) -> dict[str, set[str]]:
    """For each query naming a metric outside `known`, the names it should not use."""
    known = known | PROMETHEUS_SYNTHETIC | EXTERNAL_METRICS
    bad: dict[str, set[str]] = {}
    for query in queries:
        missing = metric_names(query.expr) - known
        if missing:
            bad[query.where] = missing
    return bad
