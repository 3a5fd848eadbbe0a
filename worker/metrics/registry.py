"""The worker's one Prometheus registry (not the global default, so that tests and embedding
programs get only ours), with the process collector's standard `process_*` series (CPU seconds,
resident memory, open files)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, disable_created_metrics

# The `_created` series (one per counter and histogram child) only double what Prometheus
# stores: nothing reads them from the text format.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
