"""Prometheus metrics of the worker, served at GET /metrics.

The one source of truth for what the worker exports: metric names, help texts and the values of
enumerated labels are defined here, docs/operating.md's metrics table lists exactly these (a test
compares them), and alerts and dashboards in deploy/ are written against that table.

Names follow Prometheus conventions: `embed_worker_` prefix, base units in the name
(`_seconds`, `_bytes`), `_total` on counters (prometheus_client adds it), `_info` on the info
metric. The process collector adds the standard `process_*` series (CPU seconds, resident
memory, open files) to our registry.

Own registry (not the global default) so that tests and embedding programs get only ours
(`registry`). The series are defined by side, `embedding` (jobs, rows, the queue, models,
providers, parses) and `serving` (HTTP, searches), and read from here as `metrics.NAME`.
"""

from __future__ import annotations

from worker.metrics.embedding import *  # noqa: F403 - the series, read as metrics.NAME
from worker.metrics.embedding import EMBEDDING_LABELS
from worker.metrics.registry import REGISTRY as REGISTRY
from worker.metrics.serving import *  # noqa: F403
from worker.metrics.serving import SERVING_LABELS

# Enumerated labels, by exported metric name: what docs/operating.md must list.
ENUMERATED_LABELS: dict[str, dict[str, tuple[str, ...]]] = EMBEDDING_LABELS | SERVING_LABELS
