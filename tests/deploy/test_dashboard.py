"""deploy/grafana/embed-worker.json, checked statically (no Grafana server runs here): a valid
importable dashboard whose queries use only documented metrics and cover what operators watch.
tests/acceptance/test_prometheus.py runs every query against a real Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.support.docs import documented_metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "embed-worker.json"
NAME = re.compile(r"(?<![\w:])(up|embed_worker_\w+|process_\w+)(?=[{\[)\s]|$)")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_panels_are_importable_with_a_datasource_input() -> None:
    board = dashboard()
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_queries_use_only_documented_metrics() -> None:
    documented = set(documented_metrics()) | {"up"}
    for expr in queries():
        for name in NAME.findall(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in documented or base in documented, (name, expr)


def test_the_dashboard_covers_what_operators_watch() -> None:
    text = "\n".join(queries())
    for needed in (
        'embed_worker_rows_total{outcome="embedded"}',  # throughput
        "embed_worker_tokens_total",
        "embed_worker_queue_jobs",  # queue depth
        "embed_worker_queue_oldest_job_age_seconds",  # and age
        "embed_worker_job_latency_seconds_bucket",  # latency histograms
        "embed_worker_batch_stage_duration_seconds_bucket",
        "dead",  # failures
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "embed_worker_model_info",
        "embed_worker_model_loaded",
        "embed_worker_target_stopped",  # what stops a table, by state
        "embed_worker_provider_requests_total",  # remote models: requests by outcome,
        "embed_worker_provider_request_duration_seconds_bucket",  # their time,
        "embed_worker_provider_tokens_total",  # tokens and spend,
        "embed_worker_provider_cost_total",
        "embed_worker_provider_circuit_open",  # and whether a provider is down
        "embed_worker_search_duration_seconds_count",  # searches: by outcome,
        "embed_worker_search_duration_seconds_bucket",  # their time,
        "embed_worker_search_stage_duration_seconds_bucket",  # where it went
        "embed_worker_http_request_duration_seconds_bucket",  # HTTP requests' time, by route
    ):
        assert needed in text, needed
