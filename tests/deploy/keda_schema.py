"""JSON schemas of the two KEDA (keda.sh/v1alpha1) resources we ship, for offline validation.

kubernetes-validate has no schemas for custom resources. These list the field names of KEDA 2.x's
ScaledObject and TriggerAuthentication CRDs (keda.sh/docs/2.x/reference/scaledobject-spec and
concepts/authentication) and the PostgreSQL scaler's documented metadata and authentication
parameters (keda.sh/docs/2.x/scalers/postgresql), with additionalProperties false, so that a
misspelt field fails here as it would be ignored or refused by the cluster. The HPA `behavior`
block is validated separately against Kubernetes' own HorizontalPodAutoscaler schema.
"""

from __future__ import annotations

from typing import Any

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}

METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": NAME,
        "namespace": NAME,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "additionalProperties": False,
}

# The PostgreSQL scaler: trigger metadata and TriggerAuthentication parameters.
POSTGRESQL_METADATA = {
    "type": "object",
    "required": ["query", "targetQueryValue"],
    "properties": {
        key: {"type": "string"}
        for key in (
            "query",
            "targetQueryValue",
            "activationTargetQueryValue",
            "connectionFromEnv",
            "host",
            "port",
            "userName",
            "dbName",
            "sslmode",
            "passwordFromEnv",
            "metricName",
        )
    },
    "additionalProperties": False,
}
POSTGRESQL_AUTH_PARAMETERS = (
    "connection",
    "password",
    "host",
    "port",
    "userName",
    "dbName",
    "sslmode",
)

SCALED_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": NAME,
                        "envSourceContainerName": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "properties": {
                        "failureThreshold": {"type": "integer"},
                        "replicas": {"type": "integer"},
                    },
                    "additionalProperties": False,
                },
                "advanced": {
                    "type": "object",
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {"name": NAME, "behavior": {"type": "object"}},
                            "additionalProperties": False,
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                    "additionalProperties": False,
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metadata": STRING_MAP,
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": NAME,
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                                "additionalProperties": False,
                            },
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                        },
                        "additionalProperties": False,
                        "if": {"properties": {"type": {"const": "postgresql"}}},
                        "then": {"properties": {"metadata": POSTGRESQL_METADATA}},
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

TRIGGER_AUTHENTICATION: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": NAME,
                            "key": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                },
                "env": {"type": "array"},
                "configMapTargetRef": {"type": "array"},
                "podIdentity": {"type": "object"},
                "hashiCorpVault": {"type": "object"},
                "azureKeyVault": {"type": "object"},
                "awsSecretManager": {"type": "object"},
                "gcpSecretManager": {"type": "object"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION}
