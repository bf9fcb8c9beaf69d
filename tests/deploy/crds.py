"""JSON schemas for the custom resources the manifests use, written for these tests.

kubernetes-validate bundles schemas for Kubernetes' own kinds only, and the operators' CRDs
cannot be fetched here. These schemas follow the operators' published CRD references (Strimzi
0.45 `kafka.strimzi.io/v1beta2`, KEDA 2.16 `keda.sh/v1alpha1`, Prometheus Operator
`monitoring.coreos.com/v1`, CloudNativePG 1.24 `postgresql.cnpg.io/v1`) for the fields these
manifests set; each spec is closed, so a misspelt field fails instead of being ignored.
"""

from __future__ import annotations

from typing import Any

_INT = {"type": "integer", "minimum": 1}
_STR = {"type": "string", "minLength": 1}
_MAP = {"type": "object"}


def _closed(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def _resource(spec: dict[str, Any], cluster_label: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}},
    }
    if cluster_label:
        metadata["required"] = ["name", "labels"]
        metadata["properties"]["labels"] = {
            "type": "object",
            "required": ["strimzi.io/cluster"],
        }
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": metadata, "spec": spec},
    }


_LISTENER = _closed(
    ["name", "port", "type", "tls"],
    {
        "name": {"type": "string", "pattern": "^[a-z0-9]{1,11}$"},
        "port": {"type": "integer", "minimum": 9092},
        "type": {
            "enum": ["internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"]
        },
        "tls": {"type": "boolean"},
        "authentication": _MAP,
        "configuration": _MAP,
        "networkPolicyPeers": {"type": "array", "items": _MAP},
    },
)

_RESOURCES = {
    "type": "object",
    "properties": {"requests": _MAP, "limits": _MAP},
    "additionalProperties": False,
}

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): _resource(
        _closed(
            ["kafka"],
            {
                "kafka": _closed(
                    ["listeners"],
                    {
                        "version": _STR,
                        "metadataVersion": _STR,
                        "listeners": {"type": "array", "minItems": 1, "items": _LISTENER},
                        "config": _MAP,
                        "authorization": _MAP,
                        "resources": _RESOURCES,
                        "metricsConfig": _MAP,
                    },
                ),
                "entityOperator": _closed([], {"topicOperator": _MAP, "userOperator": _MAP}),
                "kafkaExporter": _MAP,
                "cruiseControl": _MAP,
            },
        )
    ),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): _resource(
        _closed(
            ["replicas", "roles", "storage"],
            {
                "replicas": _INT,
                "roles": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"enum": ["controller", "broker"]},
                },
                "storage": _MAP,
                "resources": _RESOURCES,
                "template": _MAP,
            },
        ),
        cluster_label=True,
    ),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): _resource(
        _closed(
            ["partitions", "replicas", "config"],
            {
                "topicName": _STR,
                "partitions": _INT,
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {
                    "type": "object",
                    "required": ["retention.ms"],
                    "properties": {"retention.ms": {"type": "integer", "minimum": 60000}},
                },
            },
        ),
        cluster_label=True,
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): _resource(
        _closed(
            ["scaleTargetRef", "triggers"],
            {
                "scaleTargetRef": _closed(
                    ["name"], {"name": _STR, "kind": _STR, "apiVersion": _STR}
                ),
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": _INT,
                "pollingInterval": _INT,
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "fallback": _MAP,
                "advanced": _MAP,
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        ["type", "metadata"],
                        {
                            "type": _STR,
                            "name": _STR,
                            "metadata": {
                                "type": "object",
                                # KEDA reads every trigger value as a string.
                                "additionalProperties": {"type": "string"},
                            },
                            "authenticationRef": _closed(["name"], {"name": _STR}),
                        },
                    ),
                },
            },
        )
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _resource(
        _closed(
            ["selector", "endpoints"],
            {
                "selector": _MAP,
                "namespaceSelector": _MAP,
                "jobLabel": _STR,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        ["port"],
                        {
                            "port": _STR,
                            "path": _STR,
                            "interval": _STR,
                            "scrapeTimeout": _STR,
                            "scheme": _STR,
                        },
                    ),
                },
            },
        )
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _resource(
        _closed(
            ["groups"],
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        ["name", "rules"],
                        {
                            "name": _STR,
                            "interval": _STR,
                            "rules": {
                                "type": "array",
                                "items": _closed(
                                    ["expr"],
                                    {
                                        "alert": _STR,
                                        "record": _STR,
                                        "expr": _STR,
                                        "for": _STR,
                                        "labels": _MAP,
                                        "annotations": _MAP,
                                    },
                                ),
                            },
                        },
                    ),
                }
            },
        )
    ),
    ("postgresql.cnpg.io/v1", "Cluster"): _resource(
        _closed(
            ["instances", "storage"],
            {
                "instances": _INT,
                "imageName": _STR,
                "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
                "bootstrap": _MAP,
                "storage": _closed(["size"], {"size": _STR, "storageClass": _STR}),
                "resources": _RESOURCES,
                "monitoring": _MAP,
                "postgresql": _MAP,
            },
        )
    ),
}
