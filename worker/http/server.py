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
operator opts in with EMBED_HTTP_ALLOW_UNAUTHENTICATED=1. Connections, heads, bodies and the
lanes each route runs in (at most EMBED_HTTP_MAX_CONNECTIONS authenticated requests at once;
more get 503 with Retry-After) are worker.http.front's and worker.http.connection's; reading
requests within bounds and answering every bad one with its status and a JSON reason,
worker.http.protocol's (docs/http.md#hardening lists the answers).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker import exceptions, metrics
from worker.http import push
from worker.http.exposure import post_refusal
from worker.http.front import Front
from worker.http.lanes import Lane, Limits, Route
from worker.http.protocol import Answer, BadRequest, Request, retry_after
from worker.http.readiness import ReadinessProbe
from worker.http.work import Work

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.process.runner import Worker
    from worker.process.stopped import StoppedTargets

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Server:
    """The routes over the parts of the worker they use (the probes here, the POST routes'
    work in `Work`), served by a `Front`."""

    settings: Settings
    work: Work
    failure: Callable[[], BaseException | None]  # what stopped the worker, if anything
    stopped: StoppedTargets  # what stops each target's progress (sql/52_stopped.sql)
    readiness: ReadinessProbe
    post_refusal: str | None = field(init=False)
    get_routes: dict[str, Route] = field(init=False)
    post_routes: dict[str, Route] = field(init=False)
    front: Front = field(init=False)

    def __post_init__(self) -> None:
        self.post_refusal = post_refusal(self.settings)
        self.get_routes = {
            "/healthz": Route(Lane.INLINE, self._healthz),  # nothing to wait for
            "/readyz": Route(Lane.PROBE, self._readyz),
            "/metrics": Route(Lane.PROBE, self._metrics),
        }
        self.post_routes = {
            "/embed": Route(Lane.WORK, self.work.embed),
            "/functions/v1/embed": Route(Lane.WORK, self.work.push_jobs),
            "/search": Route(Lane.WORK, self.work.search),
        }
        limits = self.settings.group(Limits, "http_")
        self.front = Front(self, limits, self.settings.http_host, self.settings.http_port or 0)

    def start(self) -> None:
        self.front.start()

    def drain(self, deadline: float) -> bool:
        """Stops taking POST requests (503) and waits until the requests in progress are
        answered, or `deadline` (time.monotonic()) passes; True when none is left."""
        return self.front.drain(deadline)

    def shutdown(self) -> None:
        self.front.close()
        self.work.close()

    @property
    def url(self) -> str:
        host, port = self.front.address
        if ":" in host:  # an IPv6 address, in brackets in a URL (RFC 3986)
            host = f"[{host}]"
        return f"http://{host}:{port}"

    # --- routing ----------------------------------------------------------------------------
    def route(self, request: Request) -> Route:
        path = request.path
        shown = path if len(path) <= 100 else path[:100] + "..."
        if path in self.get_routes:
            if request.method not in ("GET", "HEAD"):
                raise BadRequest(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{request.method} is not allowed on {shown}",
                    allow="GET, HEAD",
                )
            return self.get_routes[path]
        if path not in self.post_routes:
            raise BadRequest(HTTPStatus.NOT_FOUND, f"no route {shown}")
        if request.method != "POST":
            raise BadRequest(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{request.method} is not allowed on {shown}",
                allow="POST",
            )
        # Refusals come before the body is read (with Expect: 100-continue, before it is even
        # sent), and before a slot is taken: the body of an unauthorized client is never read.
        if self.post_refusal:
            raise BadRequest(HTTPStatus.FORBIDDEN, self.post_refusal)
        self._authorize(request)
        if request.length is None:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            # 400 rather than 415: the Supabase Edge Function contract answers 400 here.
            raise BadRequest(
                HTTPStatus.BAD_REQUEST,
                f"expected Content-Type application/json, got {content_type[:100] or 'none'}",
            )
        return self.post_routes[path]

    def _authorize(self, request: Request) -> None:
        token = self.settings.http_token
        if not token:
            return
        given = request.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), token.encode()
        ):
            raise BadRequest(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

    def failed(self, request: Request, exc: Exception) -> Answer:
        if isinstance(
            exc,
            exceptions.ModelError
            | exceptions.ConnectionLost
            | exceptions.Contention
            | exceptions.SchemaMismatch
            | exceptions.RegistryUnread,
        ):
            # The request may succeed later: when, where the provider or its breaker knows
            # (another session's lock on the table: in a second; a schema being migrated: when
            # start-up looks again).
            return Answer.error(
                HTTPStatus.SERVICE_UNAVAILABLE, str(exc), retry_after=retry_after(exc)
            )
        if isinstance(exc, exceptions.EmbedWorkerError):
            return Answer.error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        logger.exception("HTTP %s %s failed", request.method, request.path[:200])
        return Answer.error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (logged)")

    # --- GET routes -------------------------------------------------------------------------
    def _healthz(self, request: Request) -> Answer:
        failure = self.failure()
        if failure is not None:
            return Answer.json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"status": "failed", "error": repr(failure)}
            )
        return Answer.json(HTTPStatus.OK, {"status": "ok"})

    def _readyz(self, request: Request) -> Answer:
        problems = self.readiness.problems()
        if problems:
            return Answer.json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not ready", "problems": problems}
            )
        # Serving, but some targets' jobs wait: ready (the process works), and says which.
        # deferred_targets: as this worker sees them; stopped_targets: what stops each target's
        # progress as the database says (sql/52_stopped.sql), as status and doctor show it.
        unservable = self.readiness.unservable_targets()
        stopped = self.stopped.current()
        if unservable or stopped:
            return Answer.json(
                HTTPStatus.OK,
                {"status": "degraded", "deferred_targets": unservable, "stopped_targets": stopped},
            )
        return Answer.json(HTTPStatus.OK, {"status": "ready"})

    def _metrics(self, request: Request) -> Answer:
        # embed_worker_ready and embed_worker_database_up: as /readyz sees the worker now
        self.readiness.problems()
        return Answer(HTTPStatus.OK, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)


def serve(worker: Worker, settings: Settings) -> Server:
    """Starts the server in a background thread; `shutdown()` stops it. The one place that
    reads the Worker: the routes, the readiness probe and push mode get what they use."""

    def stopped() -> bool:
        return worker.failure is not None or worker.finished.is_set()

    server = Server(
        settings,
        work=Work(
            settings,
            dsn=worker.dsn,
            registry=worker.registry,
            embedders=worker.embedders,
            default_model=worker.default_model,
            waiting=worker.waiting,
            push=push.Push(
                dsn=worker.dsn,
                settings=settings,
                lanes=worker.lanes,
                registry=worker.registry,
                embedders=worker.embedders,
                stopping=worker.stopping,
            ),
        ),
        failure=lambda: worker.failure,
        stopped=worker.stopped,
        readiness=ReadinessProbe(
            worker.dsn,
            settings.queue,
            registry=worker.registry,
            embedders=worker.embedders,
            default_model=worker.default_model,
            stopped=stopped,
            per_transaction=settings.per_transaction,
            waiting=worker.waiting,
        ),
    )
    server.start()
    # On SIGTERM the worker waits, within its grace period, for the requests in progress:
    # push requests hand back what they did not start, and every request is answered.
    worker.drain = server.drain
    logger.info("HTTP on %s", server.url)
    if server.post_refusal:
        logger.warning("%s", server.post_refusal)
    return server
