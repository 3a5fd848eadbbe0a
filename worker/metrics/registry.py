"""The worker's one Prometheus registry (not the global default, so that tests and embedding
programs get only ours), with the process collector's standard `process_*` series (CPU seconds,
resident memory, open files)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Info, ProcessCollector, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.samples import Sample

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


class InfoOnceSet(Info):
    """An info metric with no sample until its labels are set (and none again once they are
    cleared with `info({})`): prometheus_client's own shows `name_info 1.0` without labels
    before, which says nothing and reads as if something were set."""

    def _child_samples(self) -> Iterable[Sample]:
        with self._lock:
            if not self._value:
                return ()
        return super()._child_samples()
