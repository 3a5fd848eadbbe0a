"""The worker's HTTP side, on when EMBED_HTTP_PORT is set (bind address EMBED_HTTP_HOST).

  GET  /healthz             the process is alive and its pipeline threads are running
  GET  /readyz              the database answers and the default model is loaded (200
                            "ready", or 200 "degraded" naming the targets it cannot serve
                            and those whose progress stopped, sql/52_stopped.sql)
  GET  /metrics             Prometheus text
  POST /embed               {"input": "text"} -> {"embedding": [...]} (Supabase's quickstart
                            shape); "input" may also be a list -> {"embeddings": [[...], ...]};
                            blank text (empty or whitespace) -> null, as the worker stores none
  POST /functions/v1/embed  the Supabase guide's Edge Function contract (worker.push): 200
                            with {completedJobs, failedJobs} and x-completed-jobs/x-failed-jobs
  POST /search              {"table", "query", "k"?, "column"?, "filter"?, "mode"?, hybrid's
                            "rrf_k"?, "vector_weight"?, "text_weight"?, "depth"?} ->
                            {"results": [...]}: nearest rows, or for a chunked target documents
                            with their best chunk (worker.retrieval), as
                            EMBED_SEARCH_DATABASE_URL's role

POST routes take an optional bearer token (EMBED_HTTP_TOKEN), compared in constant time, before
the body is read. Bound to anything but loopback without a token, they answer 403 unless the
operator opts in with EMBED_HTTP_ALLOW_UNAUTHENTICATED=1. At most EMBED_HTTP_MAX_CONNECTIONS
are served at once; more get 503 with Retry-After. Reading requests within bounds (sizes, body
framing, EMBED_HTTP_TIMEOUT_SECONDS, JSON depth) and answering every bad one with its status
and a JSON reason is worker.http.protocol's part (docs/http.md#hardening lists the answers).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker import exceptions, metrics
from worker.http import protocol, push
from worker.http.exposure import post_refusal
from worker.http.protocol import BadRequest
from worker.http.readiness import ReadinessProbe
from worker.http.search_pool import SearchConnections
from worker.models import catalog, files
from worker.models.reranker import LoadedRerankers

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.models.loaded import LoadedModels
    from worker.pipeline.targets import TargetRegistry
    from worker.process.runner import Worker
    from worker.process.startup import DefaultModel
    from worker.process.stopped import StoppedTargets

logger = logging.getLogger(__name__)

MAX_INPUTS = 256  # texts per /embed request
_BUSY = b'{"error": "too many concurrent requests; retry shortly"}'
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog: socketserver's 5 drops (and resets) connections when a few dozen
    # clients connect at once (bench/search_http.py at 32 clients); the slots below, not the
    # backlog, are what bounds the connections served.
    request_queue_size = 128

    def __init__(
        self,
        settings: Settings,
        *,
        dsn: str,
        registry: TargetRegistry,
        embedders: LoadedModels,
        default_model: DefaultModel,
        failure: Callable[[], BaseException | None],  # what stopped the worker, if anything
        stopped: StoppedTargets,  # what stops each target's progress (sql/52_stopped.sql)
        readiness: ReadinessProbe,
        push: push.Push,
    ) -> None:
        self.settings = settings
        self.dsn = dsn
        self.registry = registry
        self.embedders = embedders
        self.default_model = default_model
        self.failure = failure
        self.stopped = stopped
        self.readiness = readiness
        self.push = push
        self.slots = threading.BoundedSemaphore(settings.http_max_connections)
        self.searches = SearchConnections(
            settings.search_database_url or dsn, max_size=settings.http_max_connections
        )
        # Searches' rerankers, built by the first search that names one: cross-encoders, and
        # remote rerank APIs as registered (each search reads the registration).
        self.rerankers = LoadedRerankers(
            settings.model_location, settings.threads, api_key=settings.api_key
        )
        self.post_refusal = post_refusal(settings)
        super().__init__((settings.http_host, settings.http_port or 0), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serves the connection in a thread if a slot is free; otherwise answers 503 at once."""
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def shutdown(self) -> None:
        super().shutdown()
        self.searches.close()
        self.rerankers.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The handler answers every error itself: what reaches here is a bug. Logged as ours,
        # not printed on stderr as socketserver does.
        logger.exception("HTTP connection from %s failed", client_address[0])

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class Handler(protocol.JSONRequestHandler):
    server: Server
    server_version = "embed-worker"

    def setup(self) -> None:
        self.timeout_seconds = self.server.settings.http_timeout_seconds
        self.max_body = self.server.settings.http_max_body
        super().setup()

    # --- routing ----------------------------------------------------------------------------
    def route(self, path: str, length: int | None) -> None:
        shown = path if len(path) <= 100 else path[:100] + "..."
        if path in GET_ROUTES:
            if self.command not in ("GET", "HEAD"):
                raise BadRequest(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{self.command} is not allowed on {shown}",
                    allow="GET, HEAD",
                )
            if length:  # a body nobody asked for: read past it to the next request
                self.read_body()
            GET_ROUTES[path](self)
        elif path in POST_ROUTES:
            if self.command != "POST":
                raise BadRequest(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{self.command} is not allowed on {shown}",
                    allow="POST",
                )
            # Refusals come before the body is read (with Expect: 100-continue, before it is
            # even sent): the body of an unauthorized client is never parsed.
            if self.server.post_refusal:
                raise BadRequest(HTTPStatus.FORBIDDEN, self.server.post_refusal)
            self._authorize()
            POST_ROUTES[path](self, self._json_body(length))
        else:
            raise BadRequest(HTTPStatus.NOT_FOUND, f"no route {shown}")

    def failure(self, exc: Exception) -> tuple[HTTPStatus, str] | None:
        if isinstance(exc, exceptions.ModelError | exceptions.ConnectionLost):
            return HTTPStatus.SERVICE_UNAVAILABLE, str(exc)  # the request may succeed later
        if isinstance(exc, exceptions.EmbedWorkerError):
            return HTTPStatus.INTERNAL_SERVER_ERROR, str(exc)
        return None

    # --- GET routes -------------------------------------------------------------------------
    def _healthz(self) -> None:
        failure = self.server.failure()
        if failure is not None:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "failed", "error": repr(failure)})
        else:
            self._json(HTTPStatus.OK, {"status": "ok"})

    def _readyz(self) -> None:
        problems = self.server.readiness.problems()
        if problems:
            self._json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not ready", "problems": problems}
            )
            return
        # Serving, but some targets' jobs wait: ready (the process works), and says which.
        # deferred_targets: as this worker sees them; stopped_targets: what stops each target's
        # progress as the database says (sql/52_stopped.sql), as status and doctor show it.
        unservable = self.server.readiness.unservable_targets()
        stopped = self.server.stopped.current()
        if unservable or stopped:
            self._json(
                HTTPStatus.OK,
                {"status": "degraded", "deferred_targets": unservable, "stopped_targets": stopped},
            )
        else:
            self._json(HTTPStatus.OK, {"status": "ready"})

    def _metrics(self) -> None:
        self._send(HTTPStatus.OK, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)

    # --- POST /embed ------------------------------------------------------------------------
    def _embed(self, body: Any) -> None:
        if not isinstance(body, dict) or "input" not in body:
            raise BadRequest(HTTPStatus.BAD_REQUEST, 'expected a JSON object with "input"')
        given = body["input"]
        texts = given if isinstance(given, list) else [given]
        if not texts or len(texts) > MAX_INPUTS:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f'"input" must hold 1 to {MAX_INPUTS} texts')
        if not all(isinstance(t, str) for t in texts):
            raise BadRequest(
                HTTPStatus.BAD_REQUEST, '"input" must be a string or a list of strings'
            )
        model_name = body.get("model") or self.server.default_model.name()
        if not isinstance(model_name, str):
            raise BadRequest(HTTPStatus.BAD_REQUEST, '"model" must be a string')
        self._check_model(model_name)
        # Blank text gets no vector, as the worker clears the embedding of a blank row.
        wanted = [i for i, text in enumerate(texts) if text.strip()]
        rows: list[list[float] | None] = [None] * len(texts)
        if wanted:
            vectors = self.server.embedders.get(model_name).embed([texts[i] for i in wanted])
            for i, vector in zip(wanted, vectors, strict=True):
                rows[i] = [round(float(x), 7) for x in vector]
        self._json(
            HTTPStatus.OK,
            {"embeddings": rows} if isinstance(given, list) else {"embedding": rows[0]},
        )

    def _check_model(self, name: str) -> None:
        """Only models already loaded or configured (the default, the targets'), or registry
        models already on disk: a request never names a path, never starts a download."""
        server = self.server
        configured = {server.default_model.name()} | {
            t.model for t in server.registry.snapshot().values()
        }
        if name in server.embedders.loaded() or name in configured:
            return
        if name in catalog.REGISTRY and not files.looks_like_path(name):
            try:
                server.embedders.location.locate(name)
            except exceptions.ModelNotFound:
                raise BadRequest(
                    HTTPStatus.NOT_FOUND,
                    f"model {name!r} is not present on this worker; requests never download "
                    "models (set EMBED_MODEL, or run `embed-worker model download` here)",
                ) from None
            return
        allowed = sorted(configured | set(catalog.REGISTRY))
        raise BadRequest(
            HTTPStatus.BAD_REQUEST,
            f'"model" must name a known model ({", ".join(allowed)}), not a path or another name',
        )

    def _push(self, body: Any) -> None:
        try:
            result = push.process(self.server.push, body)
        except push.InvalidRequest as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        # 200 whatever the jobs' fates, exactly as the guide's Edge Function: monitoring
        # written for it checks status_code = 200 and reads the counts from the headers.
        self._json(
            HTTPStatus.OK,
            {"completedJobs": result.completed, "failedJobs": result.failed},
            headers={
                "x-completed-jobs": str(len(result.completed)),
                "x-failed-jobs": str(len(result.failed)),
            },
        )

    def _search(self, body: Any) -> None:
        from worker.retrieval import errors, search
        from worker.retrieval.request import SearchRequest

        try:
            request = SearchRequest.parse(body)
        except ValueError as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        # As the search role when one is configured: what it may SELECT, row-level security
        # included, is what the answer holds (the worker's own role reads no user table).
        try:
            with self.server.searches.connection() as conn:
                results = search.run(
                    conn,
                    self.server.embedders.get,
                    request,
                    load_reranker=self.server.rerankers.get,
                )
        except errors.InvalidSearch as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except errors.SearchDenied as exc:
            raise BadRequest(HTTPStatus.FORBIDDEN, str(exc)) from None
        except (exceptions.TargetError, exceptions.ConfigError) as exc:
            raise BadRequest(HTTPStatus.NOT_FOUND, str(exc)) from None
        self._json(HTTPStatus.OK, {"results": results})

    # --- plumbing ---------------------------------------------------------------------------
    def _authorize(self) -> None:
        token = self.server.settings.http_token
        if not token:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), token.encode()
        ):
            raise BadRequest(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

    def _json_body(self, length: int | None) -> Any:
        if length is None:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            # 400 rather than 415: the Supabase Edge Function contract answers 400 here.
            raise BadRequest(
                HTTPStatus.BAD_REQUEST,
                f"expected Content-Type application/json, got {content_type[:100] or 'none'}",
            )
        raw = self.read_body()
        if not raw.strip():
            return None  # no body: each route says what it expects, not "malformed JSON"
        return protocol.parse_json(raw)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


GET_ROUTES = {
    "/healthz": Handler._healthz,
    "/readyz": Handler._readyz,
    "/metrics": Handler._metrics,
}
POST_ROUTES = {
    "/embed": Handler._embed,
    "/functions/v1/embed": Handler._push,
    "/search": Handler._search,
}


def serve(worker: Worker, settings: Settings) -> Server:
    """Starts the server in a background thread; `shutdown()` stops it. The one place that
    reads the Worker: the routes, the readiness probe and push mode get what they use."""

    def stopped() -> bool:
        return worker.failure is not None or worker.finished.is_set()

    server = Server(
        settings,
        dsn=worker.dsn,
        registry=worker.registry,
        embedders=worker.embedders,
        default_model=worker.default_model,
        failure=lambda: worker.failure,
        stopped=worker.stopped,
        readiness=ReadinessProbe(
            worker.dsn,
            settings.queue,
            registry=worker.registry,
            embedders=worker.embedders,
            default_model=worker.default_model,
            stopped=stopped,
        ),
        push=push.Push(
            dsn=worker.dsn,
            settings=settings,
            lanes=worker.lanes,
            registry=worker.registry,
            embedders=worker.embedders,
        ),
    )
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    logger.info("HTTP on %s", server.url)
    if server.post_refusal:
        logger.warning("%s", server.post_refusal)
    return server
