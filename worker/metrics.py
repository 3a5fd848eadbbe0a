"""Prometheus metrics of the worker, served at GET /metrics.

Own registry (not the global default) so that tests and embedding programs get only ours.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Counter(
    "embed_worker_jobs",
    "Jobs (queue messages) finished, by outcome: done, retried, dead (dead-lettered), "
    "deferred (target not servable now), released (handed back at shutdown)",
    ["outcome"],
    registry=REGISTRY,
)
ROWS = Counter(
    "embed_worker_rows",
    "Rows handled, by target and outcome: embedded, cleared (blank content), gone (row "
    "deleted), stale (content changed meanwhile; its newer job embeds it), failed",
    ["target", "outcome"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "embed_worker_tokens",
    "Tokens embedded (rate() gives tokens per second)",
    ["model"],
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "embed_worker_batch_stage_seconds",
    "Time per batch and stage: read (lease jobs), load (content), embed, write",
    ["stage"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
JOB_LATENCY = Histogram(
    "embed_worker_job_latency_seconds",
    "From a job's enqueue to its rows stored",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
QUEUE_JOBS = Gauge(
    "embed_worker_queue_jobs", "Jobs in the queue (in flight included)", registry=REGISTRY
)
QUEUE_VISIBLE = Gauge("embed_worker_queue_visible_jobs", "Jobs ready to be read", registry=REGISTRY)
QUEUE_OLDEST = Gauge(
    "embed_worker_queue_oldest_seconds", "Age of the oldest job in the queue", registry=REGISTRY
)
IN_FLIGHT = Gauge("embed_worker_in_flight_jobs", "Jobs leased by this worker", registry=REGISTRY)
DATABASE_UP = Gauge(
    "embed_worker_database_up", "1 when the last database operation succeeded", registry=REGISTRY
)
MODEL = Info("embed_worker_model", "The default model of this worker", registry=REGISTRY)

# Series exist from the start (at zero), so dashboards and alerts see them before any work.
for _stage in ("read", "load", "embed", "write"):
    STAGE_SECONDS.labels(_stage)
for _outcome in ("done", "retried", "dead", "deferred", "released"):
    JOBS.labels(_outcome)
