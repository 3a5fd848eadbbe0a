"""Prometheus metrics of the worker, served at GET /metrics.

The one source of truth for what the worker exports: metric names, help texts and the values of
enumerated labels are defined here, docs/operating.md's metrics table lists exactly these (a test
compares them), and alerts and dashboards in deploy/ are written against that table.

Names follow Prometheus conventions: `embed_worker_` prefix, base units in the name
(`_seconds`, `_bytes`), `_total` on counters (prometheus_client adds it), `_info` on the info
metric. The process collector adds the standard `process_*` series (CPU seconds, resident
memory, open files) to our registry.

Own registry (not the global default) so that tests and embedding programs get only ours.
"""

from __future__ import annotations

import contextlib

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)

# The `_created` series (one per counter and histogram child) only double what Prometheus
# stores: nothing reads them from the text format.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

# --- enumerated label values ------------------------------------------------------------------
JOB_OUTCOMES = ("done", "retried", "dead", "deferred", "released")
ROW_OUTCOMES = ("embedded", "cleared", "gone", "stale", "failed", "blocked")
STAGES = ("read", "load", "embed", "write")
LANES = ("live", "backfill")  # jobs.LIVE, jobs.BACKFILL (worker/pipeline/lanes.py)
# A search's end, as POST /search answers it: answered (200); refused, the caller's to fix (the
# request, the table, the rights: 4xx); unavailable, may succeed later (a model, a reranker,
# the database: 503); failed (500).
SEARCH_OUTCOMES = ("answered", "refused", "unavailable", "failed")
SEARCH_STAGES = ("embed", "sql", "rerank")

# A settled row's outcome, by the value of its RowState (worker/pipeline/batch.py; keyed by
# value so that this module needs no import of the pipeline, which imports it). A blank row
# whose embedding was already NULL ends as `blank`, not `cleared`: either way its embedding is
# cleared.
ROW_OUTCOME_OF_STATE = {
    "written": "embedded",
    "cleared": "cleared",
    "blank": "cleared",
    "gone": "gone",
    "stale": "stale",
    "failed": "failed",
    "blocked": "blocked",
}
# States a row is in before its batch settles, or when its batch is redone (`outdated`: its
# target was redefined meanwhile): never counted. Rows of a deferred target are not counted
# either, whatever their state: their jobs go back to the queue untouched.
# Chunked targets' rows past a batch's chunk budget ("postponed") go back to the queue too, as
# do long documents after each piece but the last ("piece").
UNSETTLED_STATES = frozenset({"pending", "ready", "embedded", "outdated", "postponed", "piece"})

# --- the metrics ------------------------------------------------------------------------------
JOBS = Counter(
    "embed_worker_jobs",
    "Jobs (queue messages) finished by this worker, by outcome: done, retried, dead "
    "(dead-lettered), deferred (target not servable now; put back without an attempt), "
    "released (handed back at shutdown)",
    ["outcome"],
    registry=REGISTRY,
)
ROWS = Counter(
    "embed_worker_rows",
    "Rows settled, by target and outcome: embedded, cleared (blank content; embedding NULL), "
    "gone (row deleted), stale (content changed meanwhile; its newer job embeds it), failed "
    "(retried, then dead-lettered), blocked (another session's lock held it up: re-queued, "
    "no attempt spent)",
    ["target", "outcome"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "embed_worker_tokens",
    "Tokens embedded, by model (rate() gives tokens per second)",
    ["model"],
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "embed_worker_batch_stage_duration_seconds",
    "Time per batch and stage: read (lease jobs), load (content), embed, write",
    ["stage"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
JOB_LATENCY = Histogram(
    "embed_worker_job_latency_seconds",
    "From a job's enqueue to its rows stored (jobs finished as done)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
QUEUE_JOBS = Gauge(
    "embed_worker_queue_jobs",
    "Jobs in the queue, in flight included (read from the database every 5 s)",
    registry=REGISTRY,
)
QUEUE_VISIBLE = Gauge(
    "embed_worker_queue_visible_jobs", "Jobs in the queue ready to be read", registry=REGISTRY
)
QUEUE_OLDEST = Gauge(
    "embed_worker_queue_oldest_job_age_seconds",
    "Age of the oldest job in the queue (0 when empty)",
    registry=REGISTRY,
)
# Priority lanes: live jobs (the triggers') go before backfill work (watch()'s initial enqueue,
# model changes, sweep(), failures --retry); each lane is its own pgmq queue.
LANE_JOBS = Gauge(
    "embed_worker_lane_jobs",
    "Jobs in each lane's queue, in flight included (read from the database every 5 s)",
    ["lane"],
    registry=REGISTRY,
)
LANE_OLDEST = Gauge(
    "embed_worker_lane_oldest_job_age_seconds",
    "Age of the oldest job of each lane (0 when empty)",
    ["lane"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("embed_worker_in_flight_jobs", "Jobs leased by this worker", registry=REGISTRY)
DATABASE_UP = Gauge(
    "embed_worker_database_up", "1 when the last database operation succeeded", registry=REGISTRY
)
MODEL_INFO_KEYS = ("name", "variant", "dimensions", "max_tokens")  # set by worker.process.runner
MODEL = Info(
    "embed_worker_model", "The default model of this worker, once loaded", registry=REGISTRY
)
MODEL_LOADED = Gauge(
    "embed_worker_model_loaded",
    "1 when the model is loaded, 0 when its last load failed (retried every 30 s); a failed "
    "model nothing uses any more (not the default, no table's) leaves the series",
    ["model"],
    registry=REGISTRY,
)
MODEL_LOAD_FAILURES = Counter(
    "embed_worker_model_load_failures",
    "Failed attempts to load a model (not downloaded, corrupt file)",
    ["model"],
    registry=REGISTRY,
)
TARGET_DEFERRED = Gauge(
    "embed_worker_target_deferred",
    "1 when the target's last batch was deferred (model missing, dimension mismatch), "
    "0 when it was served",
    ["target"],
    registry=REGISTRY,
)
TARGET_STOPPED = Gauge(
    "embed_worker_target_stopped",
    "1 while something stops the target's progress, by state (problem, held, swap_waiting, "
    "backfill_stalled, over_ceiling: sql/52_stopped.sql), 0 once it cleared; the same rows "
    "embed-worker status and doctor show",
    ["target", "state"],
    registry=REGISTRY,
)
STOPPED_STATES = ("problem", "held", "swap_waiting", "backfill_stalled", "over_ceiling")

# Remote models (worker/models/remote/): per provider (the endpoint's host[:port]) and model.
PROVIDER_OUTCOMES = (
    "ok",
    "rate_limited",  # 429 (or a model still loading): waited for, then retried; no attempt spent
    "server_error",  # 5xx
    "timeout",
    "connection_error",
    "bad_response",  # malformed, truncated, or not matching the request (count, index, dimension)
    "refused",  # 401, 403, 404: the key or the registration
    "rejected",  # 400, 413, 422: the inputs themselves
    "circuit_open",  # not sent: the provider's circuit breaker is open
)
PROVIDER_REQUESTS = Counter(
    "embed_worker_provider_requests",
    "Requests to the providers of remote models and remote rerankers, by provider (endpoint "
    "host), model (or reranker) and outcome; every attempt counts (retries too)",
    ["provider", "model", "outcome"],
    registry=REGISTRY,
)
PROVIDER_TOKENS = Counter(
    "embed_worker_provider_tokens",
    "Tokens billed by remote models' providers (their usage.total_tokens where they answer it, "
    "else our count), by provider and model",
    ["provider", "model"],
    registry=REGISTRY,
)
PROVIDER_COST = Counter(
    "embed_worker_provider_cost",
    "Estimated spend on remote models: tokens times the model's price_per_million_tokens, in "
    "the currency of that price (models without a price count nothing)",
    ["provider", "model"],
    registry=REGISTRY,
)
PROVIDER_SECONDS = Histogram(
    "embed_worker_provider_request_duration_seconds",
    "Time per request to a remote model's or reranker's provider, answered or not",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
PROVIDER_IN_FLIGHT = Gauge(
    "embed_worker_provider_in_flight_requests",
    "Requests to the provider awaiting an answer now",
    ["provider"],
    registry=REGISTRY,
)
PROVIDER_CIRCUIT_OPEN = Gauge(
    "embed_worker_provider_circuit_open",
    "1 while the provider's circuit breaker is open (it failed repeatedly: its targets' jobs "
    "are deferred, not failed, until a probe request succeeds), else 0",
    ["provider"],
    registry=REGISTRY,
)

# Documents are parsed in processes of their own (worker/pipeline/parsing/), within budgets.
PARSE_FAILURE_CAUSES = (
    "time",  # past its wall-time budget (EMBED_PARSE_TIMEOUT_SECONDS): killed
    "cpu",  # past its CPU budget (EMBED_PARSE_CPU_SECONDS)
    "memory",  # past its memory budget (EMBED_PARSE_MEMORY_MB)
    "crash",  # the parse process died (a signal, an exit)
    "unreadable",  # not a document we can read: corrupt, encrypted, unknown format, bad UTF-8
    "too_large",  # its text is over EMBED_MAX_DOCUMENT_BYTES
)
PARSE_FAILURES = Counter(
    "embed_worker_parse_failures",
    "Documents whose parse failed, by cause: time, cpu, memory (a budget: the row is retried, "
    "then dead-lettered), crash (likewise), unreadable, too_large (the row fails for good)",
    ["cause"],
    registry=REGISTRY,
)
PARSE_SECONDS = Histogram(
    "embed_worker_parse_duration_seconds",
    "Wall time of each document's parse in a parse process, done or failed",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)

# The HTTP side (worker/http/front.py): what it did to keep connections that send no request, or
# more requests than it serves at once, from keeping out the others.
HTTP_CLOSE_REASONS = (
    "busy",  # a request refused 503: every slot (or probe place) taken
    "head_timeout",  # a request line and headers not received in time: 408
    "evicted",  # a connection waiting for a request, closed to make room for a new one
)
HTTP_CLOSED = Counter(
    "embed_worker_http_connections_closed",
    "HTTP connections the server closed to protect the others, by reason: busy (a request "
    "refused 503, no slot free), head_timeout (its request line and headers not received "
    "in time: 408), evicted (waiting for a request when a new connection needed room)",
    ["reason"],
    registry=REGISTRY,
)
# Routes by their path; any other path (a 404) is `other`, so that no client adds series.
HTTP_ROUTES = ("/healthz", "/readyz", "/metrics", "/embed", "/functions/v1/embed", "/search")
HTTP_REQUEST_SECONDS = Histogram(
    "embed_worker_http_request_duration_seconds",
    "Time per HTTP request answered, from its head read to its answer sent (its body's arrival "
    "included), by route and status code",
    ["route", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
HTTP_WAITING = Gauge(
    "embed_worker_http_waiting_connections",
    "HTTP connections open without a request being served (idle keep-alive ones, heads still "
    "arriving); at most EMBED_HTTP_MAX_WAITING_CONNECTIONS",
    registry=REGISTRY,
)

# Searches (worker/retrieval/): questions embedded together, and the connections their SQL
# holds (a search leases one only while its SQL runs).
QUERY_BATCH_QUESTIONS = Histogram(
    "embed_worker_query_batch_questions",
    "Questions (POST /search, POST /embed) embedded together in one batched call, by model",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
BACKLOG_YIELDS = Counter(
    "embed_worker_backlog_yields",
    "Backlog inference calls that waited for a question's call to end before they began, by model",
    ["model"],
    registry=REGISTRY,
)
SEARCH_POOL_SIZE = Gauge(
    "embed_worker_search_pool_size",
    "Connections POST /search's pool may open (EMBED_SEARCH_POOL_SIZE)",
    registry=REGISTRY,
)
SEARCH_CONNECTIONS_LEASED = Gauge(
    "embed_worker_search_connections_leased",
    "POST /search's pooled connections held by a search's SQL now",
    registry=REGISTRY,
)
# Searches are milliseconds; the first of a model includes its load (seconds).
SEARCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SEARCH_SECONDS = Histogram(
    "embed_worker_search_duration_seconds",
    "Time per search (POST /search, embed-worker search, SearchService), from its question to "
    "its results, by outcome",
    ["outcome"],
    buckets=SEARCH_BUCKETS,
    registry=REGISTRY,
)
SEARCH_STAGE_SECONDS = Histogram(
    "embed_worker_search_stage_duration_seconds",
    "Time of each stage of a search as it runs: embed (the question, its batch's wait "
    "included), sql (each lease of a pooled connection: the target checked, the ranking), rerank",
    ["stage"],
    buckets=SEARCH_BUCKETS,
    registry=REGISTRY,
)
SEARCH_CONNECTION_WAIT = Histogram(
    "embed_worker_search_connection_wait_seconds",
    "Time a search waited for a pooled connection (every one leased: the pool is too small "
    "for the searches' SQL, or the database slow)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
    registry=REGISTRY,
)

# Series exist from the start (at zero), so dashboards and alerts see them before any work.
for _reason in HTTP_CLOSE_REASONS:
    HTTP_CLOSED.labels(_reason)
for _stage in STAGES:
    STAGE_SECONDS.labels(_stage)
for _outcome in JOB_OUTCOMES:
    JOBS.labels(_outcome)
for _lane in LANES:
    LANE_JOBS.labels(_lane)
    LANE_OLDEST.labels(_lane)
for _cause in PARSE_FAILURE_CAUSES:
    PARSE_FAILURES.labels(_cause)
for _outcome in SEARCH_OUTCOMES:
    SEARCH_SECONDS.labels(_outcome)
for _stage in SEARCH_STAGES:
    SEARCH_STAGE_SECONDS.labels(_stage)

# Enumerated labels, by exported metric name: what docs/operating.md must list.
ENUMERATED_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "embed_worker_jobs_total": {"outcome": JOB_OUTCOMES},
    "embed_worker_rows_total": {"outcome": ROW_OUTCOMES},
    "embed_worker_batch_stage_duration_seconds": {"stage": STAGES},
    "embed_worker_lane_jobs": {"lane": LANES},
    "embed_worker_lane_oldest_job_age_seconds": {"lane": LANES},
    "embed_worker_target_stopped": {"state": STOPPED_STATES},
    "embed_worker_http_connections_closed_total": {"reason": HTTP_CLOSE_REASONS},
    "embed_worker_http_request_duration_seconds": {"route": (*HTTP_ROUTES, "other")},
    "embed_worker_provider_requests_total": {"outcome": PROVIDER_OUTCOMES},
    "embed_worker_parse_failures_total": {"cause": PARSE_FAILURE_CAUSES},
    "embed_worker_search_duration_seconds": {"outcome": SEARCH_OUTCOMES},
    "embed_worker_search_stage_duration_seconds": {"stage": SEARCH_STAGES},
}


def http_answered(path: str, status: int, seconds: float) -> None:
    """A request to `path` answered `status` after `seconds` (worker/http/connection.py)."""
    route = path if path in HTTP_ROUTES else "other"
    HTTP_REQUEST_SECONDS.labels(route, str(int(status))).observe(seconds)


def row_outcome(state: str) -> str | None:
    """The outcome counted for a row in RowState value `state`; None while unsettled."""
    if state in UNSETTLED_STATES:
        return None
    return ROW_OUTCOME_OF_STATE[state]  # a KeyError names a new state nobody mapped


def count_row(target: str, state: str) -> None:
    outcome = row_outcome(state)
    if outcome is not None:
        ROWS.labels(target, outcome).inc()


def model_loaded(model: str) -> None:
    MODEL_LOADED.labels(model).set(1)


def model_unused(model: str) -> None:
    """`model` is no longer the default nor any target's: its series leaves /metrics, so that a
    load that failed while it was wanted stops firing the alert (deploy/prometheus/alerts.yml)."""
    with contextlib.suppress(KeyError):
        MODEL_LOADED.remove(model)


def model_load_failed(model: str) -> None:
    MODEL_LOADED.labels(model).set(0)
    MODEL_LOAD_FAILURES.labels(model).inc()
