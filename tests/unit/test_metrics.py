"""The metrics the worker exports equal the documented ones (docs/metrics.md), and
row outcomes are counted from RowState in one place (worker.metrics), deferred rows never."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from tests.support.docs import Documented, documented_metrics
from tests.support.factories import job, target
from worker import metrics
from worker.config import Settings
from worker.pipeline import settlement, stages, write
from worker.pipeline.batch import Batch, RowState


def exported_name(wrapper: MetricWrapperBase) -> str:
    kind = str(wrapper._type)
    suffix = {"counter": "_total", "info": "_info"}.get(kind, "")
    return str(wrapper._name) + suffix


def declared_metrics() -> dict[str, Documented]:
    """What worker.metrics declares, plus the process collector's series."""
    declared: dict[str, Documented] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = exported_name(value)
            labels = frozenset(value._labelnames)
            kind = str(value._type)
            if kind == "info":  # an info metric's labels are its values' keys
                labels = frozenset(metrics.MODEL_INFO_KEYS)
                kind = "gauge"  # what the exposition (and so the docs) says: text has no info
            declared[name] = Documented(kind, labels, metrics.ENUMERATED_LABELS.get(name, {}))
    for family in metrics.REGISTRY.collect():
        if family.name.startswith("process_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            declared[name] = Documented(family.type, frozenset(), {})
    return declared


def test_the_documented_metrics_are_the_declared_ones() -> None:
    documented = documented_metrics()
    declared = declared_metrics()
    assert sorted(documented) == sorted(declared)
    for name, doc in documented.items():
        assert doc == declared[name], name


def test_every_exported_series_is_documented_with_its_labels_and_values() -> None:
    documented = documented_metrics()
    exposition = generate_latest(metrics.REGISTRY).decode()
    for family in text_string_to_metric_families(exposition):
        name = family.name + {"counter": "_total", "info": "_info"}.get(family.type, "")
        assert name in documented, f"{name} is exported but not documented"
        doc = documented[name]
        # The text format has no info type: an info metric is a gauge named *_info, and the
        # docs say what a scrape shows.
        assert family.type == doc.type, name
        for sample in family.samples:
            labels = set(sample.labels) - {"le"}  # histogram buckets
            assert labels <= doc.labels, (name, labels)
            for label, value in sample.labels.items():
                if label in doc.values:
                    assert value in doc.values[label], (name, label, value)
    # Series made at zero from the start carry exactly the documented values.
    assert set(re.findall(r'embed_worker_jobs_total\{outcome="(\w+)"\}', exposition)) == set(
        documented["embed_worker_jobs_total"].values["outcome"]
    )
    stages = re.findall(r'batch_stage_duration_seconds_count\{stage="(\w+)"\}', exposition)
    assert set(stages) == set(
        documented["embed_worker_batch_stage_duration_seconds"].values["stage"]
    )


def test_the_table_parser_reads_enumerated_and_free_labels() -> None:
    table = "| `m_total` | counter | `target`; `outcome`: `a`, `b` | x |\n| `g` | gauge | | y |"
    parsed = documented_metrics(table)
    assert parsed["m_total"] == Documented(
        "counter", frozenset({"target", "outcome"}), {"outcome": ("a", "b")}
    )
    assert parsed["g"] == Documented("gauge", frozenset(), {})


def test_every_row_state_is_counted_as_a_documented_outcome_or_not_at_all() -> None:
    for state in RowState:
        outcome = metrics.row_outcome(state.value)
        assert outcome is None or outcome in metrics.ROW_OUTCOMES, state
    settled = {metrics.row_outcome(s.value) for s in RowState} - {None}
    assert settled == set(metrics.ROW_OUTCOMES)
    assert metrics.row_outcome("ready") is None


def _rows_counted(name: str) -> dict[str, float]:
    counted: dict[str, float] = {}
    for family in metrics.REGISTRY.collect():
        if family.name == "embed_worker_rows":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["target"] == name:
                    counted[s.labels["outcome"]] = s.value
    return counted


def _gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_rows_of_a_deferred_target_are_not_counted_and_the_target_is_flagged() -> None:
    served = target(id=71, table="served_docs")
    deferred = target(id=72, table="deferred_docs")
    targets = {71: served, 72: deferred}
    jobs = [
        job({"target": 71, "keys": [1, 2, 3]}, targets, msg_id=1),
        job({"target": 72, "keys": [1, 2]}, targets, msg_id=2),
    ]
    batch = Batch(jobs=jobs)
    stages.prepare(batch)
    states = {
        (71, "1"): RowState.WRITTEN,
        (71, "2"): RowState.BLANK,
        (71, "3"): RowState.GONE,
        (72, "1"): RowState.READY,  # loaded, then its model was missing
        (72, "2"): RowState.GONE,
    }
    for key, state in states.items():
        batch.rows[key].state = state
    batch.deferred[72] = "model 'x' is not present"
    before_deferred_jobs = _gauge("embed_worker_jobs_total", outcome="deferred") or 0
    settled = settlement.settle(batch, Settings(), datetime.now(UTC))

    write._count(batch, settled)

    assert _rows_counted(served.name) == {"embedded": 1, "cleared": 1, "gone": 1}
    assert _rows_counted(deferred.name) == {}
    assert _gauge("embed_worker_jobs_total", outcome="deferred") == before_deferred_jobs + 1
    assert _gauge("embed_worker_target_deferred", target=deferred.name) == 1
    assert _gauge("embed_worker_target_deferred", target=served.name) == 0


def test_the_model_info_has_its_labels_or_no_sample() -> None:
    """No default model loaded (not yet, or it failed): no `embed_worker_model_info 1.0`
    without labels, but no sample at all; once loaded, one with every documented label."""
    saved = dict(metrics.MODEL._value)
    try:
        metrics.MODEL.info({})
        assert _info_samples() == []
        metrics.MODEL.info(
            {"name": "m", "variant": "fp32", "dimensions": "384", "max_tokens": "512"}
        )
        assert [set(labels) for labels in _info_samples()] == [set(metrics.MODEL_INFO_KEYS)]
    finally:
        metrics.MODEL.info(saved)


def _info_samples() -> list[dict[str, str]]:
    exposition = generate_latest(metrics.REGISTRY).decode()
    return [
        sample.labels
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "embed_worker_model_info"
    ]


def test_model_load_outcomes_are_exported() -> None:
    metrics.model_load_failed("unit-test-model")
    assert _gauge("embed_worker_model_loaded", model="unit-test-model") == 0
    assert _gauge("embed_worker_model_load_failures_total", model="unit-test-model") == 1
    metrics.model_loaded("unit-test-model")
    assert _gauge("embed_worker_model_loaded", model="unit-test-model") == 1
