"""deploy/kubernetes, validated offline: the kustomization builds (`kubectl kustomize` when
kubectl is installed), Kubernetes resources pass kubernetes-validate's strict schemas, the KEDA
resources pass the schemas of tests/deploy/keda_schema.py, and the manifests agree with the
worker (grace period, probes, port, settings), the image (user) and the benchmark (memory)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.keda_schema import POSTGRESQL_AUTH_PARAMETERS, SCHEMAS
from tests.unit.test_packaging import SHUTDOWN_STEPS_SECONDS
from worker.config import Settings
from worker.http import push
from worker.http.exposure import post_refusal

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
SCALING = ROOT / "docs" / "scaling.md"
KUBERNETES_VERSION = "1.29.0"  # the oldest release still commonly supported by providers
EXTRA_ENV = {"HF_HOME"}  # read by huggingface_hub, not by Settings


def build() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run(
            [kubectl, "kustomize", str(KUBE)], check=True, capture_output=True, text=True
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    # Without kubectl: the resources the kustomization lists, as they are.
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return [
        d
        for name in kustomization["resources"]
        for d in yaml.safe_load_all((KUBE / name).read_text())
        if d
    ]


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    built = build()
    by_kind = {d["kind"]: d for d in built}
    assert len(by_kind) == len(built), "one resource per kind"
    return by_kind


def container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (found,) = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(found)


def env_of(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(resources)["env"]}


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_kubernetes_resources_pass_the_strict_schemas(resources: dict[str, dict[str, Any]]) -> None:
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= set(resources)
    for kind, resource in resources.items():
        if kind in SCHEMAS:
            continue
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_keda_resources_pass_keda_field_names(resources: dict[str, dict[str, Any]]) -> None:
    for kind, schema in SCHEMAS.items():
        jsonschema.validate(resources[kind], schema)
    # The HPA behaviour KEDA passes through is Kubernetes' own: validate it as an HPA.
    scaled = resources["ScaledObject"]["spec"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa-embed-worker"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            "minReplicas": scaled["minReplicaCount"],
            "maxReplicas": scaled["maxReplicaCount"],
            "behavior": scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        },
    }
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_keda_field_is_refused() -> None:
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "triggers": [
                {"type": "postgresql", "metadata": {"query": "SELECT 1", "targetValue": "5"}}
            ],
        },
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMAS["ScaledObject"])


def test_the_scaler_queries_the_queue_depth_with_the_workers_secret(
    resources: dict[str, dict[str, Any]],
) -> None:
    scaled = resources["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == resources["Deployment"]["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "postgresql"
    assert "pending_jobs" in trigger["metadata"]["query"]
    assert "embeddings.status" in trigger["metadata"]["query"]
    auth = resources["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] in POSTGRESQL_AUTH_PARAMETERS
    secret = env_of(resources)["DATABASE_URL"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (secret["name"], secret["key"])


def test_the_grace_period_covers_the_workers(resources: dict[str, dict[str, Any]]) -> None:
    grace = float(env_of(resources).get("EMBED_GRACE_SECONDS") or Settings().grace_seconds)
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= grace + SHUTDOWN_STEPS_SECONDS


def test_probes_use_the_workers_routes_and_port(resources: dict[str, dict[str, Any]]) -> None:
    worker = container(resources)
    (port,) = worker["ports"]
    assert str(port["containerPort"]) == env_of(resources)["EMBED_HTTP_PORT"]
    assert env_of(resources)["EMBED_HTTP_HOST"] == "0.0.0.0"  # reachable by the kubelet
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert worker[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
    service = resources["Service"]["spec"]
    assert service["ports"][0]["targetPort"] == port["name"]


def test_the_post_routes_serve_with_the_manifests_env(
    resources: dict[str, dict[str, Any]],
) -> None:
    """The Deployment listened on 0.0.0.0 with neither EMBED_HTTP_TOKEN nor
    EMBED_HTTP_ALLOW_UNAUTHENTICATED: every POST the Service carries (/embed, /search) answered
    403. Its env, a secret's value standing in for each secretKeyRef, as the server judges it."""
    env: dict[str, str] = {}
    for entry in container(resources)["env"]:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        # An optional secret left out would bring back the 403s, silently.
        assert not ref.get("optional", False), entry["name"]
        env[entry["name"]] = f"<{ref['name']}/{ref['key']}>"
    settings = Settings.from_env(env)
    assert post_refusal(settings) is None
    assert settings.http_token, "off loopback, the POST routes need a token, not an opt-out"


def test_every_setting_is_one_the_worker_reads(resources: dict[str, dict[str, Any]]) -> None:
    known = {f.metadata["env"] for f in fields(Settings)} | {"EMBED_MODEL_PATH", "EMBED_CACHE_DIR"}
    assert set(env_of(resources)) - EXTRA_ENV <= known
    assert int(env_of(resources)["EMBED_THREADS"]) <= float(
        container(resources)["resources"]["limits"]["cpu"]
    )


def test_runs_unprivileged_on_a_read_only_root(resources: dict[str, dict[str, Any]]) -> None:
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    worker = container(resources)
    uid = re.search(r"^ARG UID=(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert uid is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    assert worker["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # What the worker writes goes to volumes: the model cache, and temporary files.
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert env_of(resources)["EMBED_CACHE_DIR"] in mounts
    assert "/tmp" in mounts


def _peak_rss_mb() -> float:
    peaks: list[float] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("peak_rss_mb", "rss_mb_max") and isinstance(item, int | float):
                    peaks.append(float(item))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in (ROOT / "bench" / "results").glob("*.json"):
        walk(json.loads(path.read_text()))
    assert peaks, "no RSS figures in bench/results"
    return max(peaks)


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1) * 1.048576  # MiB -> MB


def test_memory_is_sized_from_the_benchmarks_peak_rss(resources: dict[str, dict[str, Any]]) -> None:
    limits = container(resources)["resources"]["limits"]
    requests = container(resources)["resources"]["requests"]
    peak = _peak_rss_mb()
    assert _mebibytes(limits["memory"]) >= 1.25 * peak
    assert _mebibytes(requests["memory"]) >= peak
    assert _mebibytes(limits["memory"]) <= 4 * peak  # sized, not a blanket figure


def test_disruption_budget_and_service_select_the_pods(
    resources: dict[str, dict[str, Any]],
) -> None:
    labels = resources["Deployment"]["spec"]["template"]["metadata"]["labels"]
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert resources["Service"]["spec"]["selector"].items() <= labels.items()
    assert pdb.get("maxUnavailable") == 1  # never blocks a drain of a single replica


def test_the_connection_budget_in_the_docs_is_the_workers(
    resources: dict[str, dict[str, Any]],
) -> None:
    """docs/scaling.md said each worker keeps 3 connections; the search pool adds up to
    EMBED_SEARCH_POOL_SIZE (9 were open after 6 searches at once). Its figures, from the code:
    the fetcher, writer and keeper; the search pool; an index build; /readyz, push mode's
    requests and the watchdog; and KEDA's maxReplicaCount times that."""
    pipeline, index_build, readyz, watchdog = 3, 1, 1, 1
    others = index_build + readyz + push.MAX_CONCURRENT_REQUESTS + watchdog
    per_worker = pipeline + Settings().search_pool_size + others
    replicas = resources["ScaledObject"]["spec"]["maxReplicaCount"]
    text = " ".join(SCALING.read_text().split())
    assert f"at most 3 + `EMBED_SEARCH_POOL_SIZE` + {others} connections" in text
    assert f"at most {per_worker} connections with the defaults" in text
    assert (
        f"{replicas} replicas may open {replicas} × {per_worker} = {replicas * per_worker}" in text
    )
