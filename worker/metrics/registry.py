"""The worker's one Prometheus registry (not the global default, so that tests and embedding
programs get only ours), with the process collector's standard `process_*` series (CPU seconds,
resident memory, open files)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, ProcessCollector, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

# The `_created` series (one per counter and histogram child) only double what Prometheus
# stores: nothing reads them from the text format.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)


def at_zero(metric: MetricWrapperBase, values: Iterable[str]) -> None:
    """`metric`'s series, one per label value, made now at zero: dashboards and alerts see them
    before any work."""
    for value in values:
        metric.labels(value)
