"""The serving side's series: the HTTP front's connections and requests, searches (their time,
stages, batched questions, pooled connections) and the backlog's yielding to questions."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from worker.metrics.registry import REGISTRY, at_zero

# A search's end, as POST /search answers it: answered (200); refused, the caller's to fix (the
# request, the table, the rights: 4xx); unavailable, may succeed later (a model, a reranker,
# the database: 503); failed (500).
SEARCH_OUTCOMES = ("answered", "refused", "unavailable", "failed")
SEARCH_STAGES = ("embed", "sql", "rerank")

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
at_zero(HTTP_CLOSED, HTTP_CLOSE_REASONS)
at_zero(SEARCH_SECONDS, SEARCH_OUTCOMES)
at_zero(SEARCH_STAGE_SECONDS, SEARCH_STAGES)

# Enumerated labels, by exported metric name (metrics.ENUMERATED_LABELS).
SERVING_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "embed_worker_http_connections_closed_total": {"reason": HTTP_CLOSE_REASONS},
    "embed_worker_http_request_duration_seconds": {"route": (*HTTP_ROUTES, "other")},
    "embed_worker_search_duration_seconds": {"outcome": SEARCH_OUTCOMES},
    "embed_worker_search_stage_duration_seconds": {"stage": SEARCH_STAGES},
}


def http_answered(path: str, status: int, seconds: float) -> None:
    """A request to `path` answered `status` after `seconds` (worker/http/connection.py)."""
    route = path if path in HTTP_ROUTES else "other"
    HTTP_REQUEST_SECONDS.labels(route, str(int(status))).observe(seconds)
