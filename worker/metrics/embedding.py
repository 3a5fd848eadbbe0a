"""The embedding side's series: jobs, rows, batches' stages, the queue and its lanes, the
models, the targets, remote models' providers, documents' parses, and the database sessions
replaced for the tables they served (the search pool's too)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from worker.escapes import label
from worker.metrics.registry import REGISTRY, InfoOnceSet, at_zero

# --- enumerated label values ------------------------------------------------------------------
JOB_OUTCOMES = ("done", "retried", "dead", "deferred", "released")
ROW_OUTCOMES = ("embedded", "cleared", "gone", "stale", "failed", "blocked")
STAGES = ("read", "load", "embed", "write")
LANES = ("live", "backfill")  # jobs.LIVE, jobs.BACKFILL (worker/pipeline/lanes.py)

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
# do long documents after each piece but the last ("piece"); a long document's piece whose chain
# another job's took over ("superseded") is counted by that chain, when its last piece is written.
UNSETTLED_STATES = frozenset(
    {"pending", "ready", "embedded", "outdated", "postponed", "piece", "superseded"}
)

# --- the metrics ------------------------------------------------------------------------------
JOBS = Counter(
    "embed_worker_jobs",
    "Jobs (queue messages) finished by this worker, by outcome: done, retried, dead "
    "(dead-lettered), deferred (target not servable now; put back without an attempt), "
    "released (handed back without spending an attempt: at shutdown, or read under a definition "
    "of its target that a rename, retype or watch() replaced since, redone at once)",
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
DATABASE_UP = Gauge(  # set by worker/http/readiness.py, for /readyz and each scrape
    "embed_worker_database_up",
    "1 when the database answers and takes writes, as /readyz checks it (at each scrape, at "
    "most once a second); 0 when it does not answer, or refuses writes (a standby, read-only)",
    registry=REGISTRY,
)
READY = Gauge(  # set by worker/http/readiness.py, with /readyz's answer
    "embed_worker_ready",
    "1 when /readyz answers 200 (at each scrape and each /readyz); 0 while it answers 503: "
    "start-up waits (for `migrate`, a queue), the default model is not loaded, the database "
    "does not answer or refuses writes, or the pipeline stopped",
    registry=REGISTRY,
)
MODEL_INFO_KEYS = ("name", "variant", "dimensions", "max_tokens")  # set by worker.process.runner
MODEL = InfoOnceSet(  # no sample while no default model is loaded
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
    "swap_failed, backfill_stalled, over_ceiling: sql/52_stopped.sql), 0 once it cleared; the "
    "same rows embed-worker status and doctor show",
    ["target", "state"],
    registry=REGISTRY,
)
STOPPED_STATES = (
    "problem",
    "held",
    "swap_waiting",
    "swap_failed",
    "backfill_stalled",
    "over_ceiling",
)

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
    "1 while the circuit of the provider's host is open (the host failed repeatedly: the "
    "targets of every model it serves are deferred, not failed, until a probe request is "
    "answered), else 0",
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
# Sessions replaced for the tables they served (EMBED_SESSION_MAX_TABLES): the worker's
# (worker/sessions.py, by Session.name) and POST /search's pooled ones (worker/retrieval/pool.py).
REPLACED_SESSIONS = ("writer", "fetcher", "search")
SESSIONS_REPLACED = Counter(
    "embed_worker_sessions_replaced",
    "Database sessions replaced after serving EMBED_SESSION_MAX_TABLES different watched "
    "tables (Postgres frees what a session compiled of each table's functions only when it "
    "ends), by session: writer, fetcher (the worker's), search (a POST /search connection)",
    ["session"],
    registry=REGISTRY,
)
PARSE_SECONDS = Histogram(
    "embed_worker_parse_duration_seconds",
    "Wall time of each document's parse in a parse process, done or failed",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)

# Series exist from the start (at zero), so dashboards and alerts see them before any work.
at_zero(STAGE_SECONDS, STAGES)
at_zero(JOBS, JOB_OUTCOMES)
at_zero(LANE_JOBS, LANES)
at_zero(LANE_OLDEST, LANES)
at_zero(PARSE_FAILURES, PARSE_FAILURE_CAUSES)
at_zero(SESSIONS_REPLACED, REPLACED_SESSIONS)

# Enumerated labels, by exported metric name (metrics.ENUMERATED_LABELS).
EMBEDDING_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "embed_worker_jobs_total": {"outcome": JOB_OUTCOMES},
    "embed_worker_rows_total": {"outcome": ROW_OUTCOMES},
    "embed_worker_batch_stage_duration_seconds": {"stage": STAGES},
    "embed_worker_lane_jobs": {"lane": LANES},
    "embed_worker_lane_oldest_job_age_seconds": {"lane": LANES},
    "embed_worker_target_stopped": {"state": STOPPED_STATES},
    "embed_worker_provider_requests_total": {"outcome": PROVIDER_OUTCOMES},
    "embed_worker_parse_failures_total": {"cause": PARSE_FAILURE_CAUSES},
    "embed_worker_sessions_replaced_total": {"session": REPLACED_SESSIONS},
}


def row_outcome(state: str) -> str | None:
    """The outcome counted for a row in RowState value `state`; None while unsettled."""
    if state in UNSETTLED_STATES:
        return None
    return ROW_OUTCOME_OF_STATE[state]  # a KeyError names a new state nobody mapped


# A target's label is its name as a terminal shows it (escapes.label(), one label per name): a
# tenant names the table, and an operator reads /metrics with curl too (the text format escapes
# only a backslash, a quote and a newline). Names without control characters or backslashes,
# which is all an alert is written against, are unchanged.
def count_row(target: str, state: str) -> None:
    outcome = row_outcome(state)
    if outcome is not None:
        ROWS.labels(label(target), outcome).inc()


def target_deferred(target: str, deferred: bool) -> None:
    TARGET_DEFERRED.labels(label(target)).set(1 if deferred else 0)


def target_stopped(target: str, state: str, stopped: bool) -> None:
    """1 while `state` stops `target`; 0 once it cleared, so that the alert resolves."""
    TARGET_STOPPED.labels(label(target), state).set(1 if stopped else 0)


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
