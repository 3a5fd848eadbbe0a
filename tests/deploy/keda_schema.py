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


def closed_object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An object of these properties and no other (a misspelt field fails)."""
    schema: dict[str, Any] = {"type": "object"}
    if required is not None:
        schema["required"] = required
    return schema | {"properties": properties, "additionalProperties": False}


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}

METADATA = closed_object(
    {
        "name": NAME,
        "namespace": NAME,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    required=["name"],
)

# The PostgreSQL scaler: trigger metadata and TriggerAuthentication parameters.
POSTGRESQL_METADATA = closed_object(
    {
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
    required=["query", "targetQueryValue"],
)
POSTGRESQL_AUTH_PARAMETERS = (
    "connection",
    "password",
    "host",
    "port",
    "userName",
    "dbName",
    "sslmode",
)

SCALED_OBJECT: dict[str, Any] = closed_object(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": METADATA,
        "spec": closed_object(
            {
                "scaleTargetRef": closed_object(
                    {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": NAME,
                        "envSourceContainerName": {"type": "string"},
                    },
                    required=["name"],
                ),
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": closed_object(
                    {
                        "failureThreshold": {"type": "integer"},
                        "replicas": {"type": "integer"},
                    },
                    required=["failureThreshold", "replicas"],
                ),
                "advanced": closed_object(
                    {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": closed_object(
                            {"name": NAME, "behavior": {"type": "object"}}
                        ),
                        "scalingModifiers": {"type": "object"},
                    }
                ),
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": closed_object(
                        {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metadata": STRING_MAP,
                            "authenticationRef": closed_object(
                                {
                                    "name": NAME,
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                                required=["name"],
                            ),
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                        },
                        required=["type", "metadata"],
                    )
                    | {
                        "if": {"properties": {"type": {"const": "postgresql"}}},
                        "then": {"properties": {"metadata": POSTGRESQL_METADATA}},
                    },
                },
            },
            required=["scaleTargetRef", "triggers"],
        ),
    },
    required=["apiVersion", "kind", "metadata", "spec"],
)

TRIGGER_AUTHENTICATION: dict[str, Any] = closed_object(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": METADATA,
        "spec": closed_object(
            {
                "secretTargetRef": {
                    "type": "array",
                    "items": closed_object(
                        {
                            "parameter": {"type": "string"},
                            "name": NAME,
                            "key": {"type": "string"},
                        },
                        required=["parameter", "name", "key"],
                    ),
                },
                "env": {"type": "array"},
                "configMapTargetRef": {"type": "array"},
                "podIdentity": {"type": "object"},
                "hashiCorpVault": {"type": "object"},
                "azureKeyVault": {"type": "object"},
                "awsSecretManager": {"type": "object"},
                "gcpSecretManager": {"type": "object"},
            }
        ),
    },
    required=["apiVersion", "kind", "metadata", "spec"],
)

SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION}
