"""The worker's HTTP side, on when EMBED_HTTP_PORT is set (bind address EMBED_HTTP_HOST).

  GET  /healthz             the process is alive and its pipeline threads are running
  GET  /readyz              the database answers and the default model is loaded
  GET  /metrics             Prometheus text
  POST /embed               {"input": "text"} -> {"embedding": [...]} (Supabase's quickstart
                            shape); "input" may also be a list -> {"embeddings": [[...], ...]}
  POST /functions/v1/embed  the Supabase guide's Edge Function contract (worker.push)
  POST /search              {"table", "query", "k"} -> {"results": [...]}: nearest rows, or for
                            a chunked target documents with their best chunk (worker.search)

POST routes take an optional bearer token (EMBED_HTTP_TOKEN), compared in constant time.
Bodies are limited to EMBED_HTTP_MAX_BODY bytes; malformed input is a 400 with the reason.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker import db, exceptions, metrics

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.runner import Worker

logger = logging.getLogger(__name__)

MAX_INPUTS = 256  # texts per /embed request


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, worker: Worker, settings: Settings) -> None:
        self.worker = worker
        self.settings = settings
        self.readiness = ReadinessProbe(worker)
        super().__init__((settings.http_host, settings.http_port or 0), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class ReadinessProbe:
    """Database reachable (checked at most once a second) and the default model loaded."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._db_error: str | None = "not checked yet"

    def problems(self) -> list[str]:
        found = []
        model_problem = self.worker.default_model_problem()
        if model_problem:
            found.append(f"model {self.worker.settings.model}: {model_problem}")
        if self.worker.failure is not None or self.worker.finished.is_set():
            found.append("worker stopped")
        db_error = self._database()
        if db_error:
            found.append(f"database: {db_error}")
        return found

    def _database(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._checked_at < 1.0:
                return self._db_error
            try:
                with db.connect(self.worker.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                self._db_error = None
            except exceptions.EmbedWorkerError as exc:
                self._db_error = str(exc)
            self._checked_at = time.monotonic()
            return self._db_error


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "embed-worker"

    # --- routing ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        routes = {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics}
        path = self.path.split("?", 1)[0]
        if path in routes:
            routes[path]()
        elif path in POST_ROUTES:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST", allow="POST")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route {path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in POST_ROUTES:
            if path in ("/healthz", "/readyz", "/metrics"):
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET", allow="GET")
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route {path}")
            return
        try:
            self._authorize()
            body = self._json_body()
            POST_ROUTES[path](self, body)
        except BadRequest as exc:
            self._error(exc.status, str(exc))
        except exceptions.ModelError as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
        except exceptions.EmbedWorkerError as exc:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    def _not_allowed(self) -> None:
        self._drain_body()
        path = self.path.split("?", 1)[0]
        allow = "POST" if path in POST_ROUTES else "GET"
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not allowed", allow=allow)

    # --- GET routes -------------------------------------------------------------------------
    def _healthz(self) -> None:
        worker = self.server.worker
        if worker.failure is not None:
            self._json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"status": "failed", "error": repr(worker.failure)}
            )
        else:
            self._json(HTTPStatus.OK, {"status": "ok"})

    def _readyz(self) -> None:
        problems = self.server.readiness.problems()
        if problems:
            self._json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not ready", "problems": problems}
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
        model_name = body.get("model") or self.server.settings.model
        if not isinstance(model_name, str):
            raise BadRequest(HTTPStatus.BAD_REQUEST, '"model" must be a string')
        vectors = self.server.worker.embedders.get(model_name).embed(texts)
        rows = [[round(float(x), 7) for x in v] for v in vectors]
        self._json(
            HTTPStatus.OK,
            {"embeddings": rows} if isinstance(given, list) else {"embedding": rows[0]},
        )

    def _push(self, body: Any) -> None:
        from worker import push

        try:
            result = push.process(self.server.worker, body)
        except push.InvalidRequest as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        # 207 Multi-Status, as the guide's Edge Function answers: jobs succeed one by one.
        self._json(
            HTTPStatus.MULTI_STATUS,
            {"completedJobs": result.completed, "failedJobs": result.failed},
            headers={
                "x-completed-jobs": str(len(result.completed)),
                "x-failed-jobs": str(len(result.failed)),
            },
        )

    def _search(self, body: Any) -> None:
        from worker import search

        try:
            request = search.Request.parse(body)
        except ValueError as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None
        worker = self.server.worker
        try:
            with db.connect(worker.dsn, connect_timeout=5) as conn:
                results = search.run(conn, worker.embedders.get, request)
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
            self._drain_body()
            raise BadRequest(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

    def _json_body(self) -> Any:
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        try:
            length = int(length_header)
        except ValueError:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "invalid Content-Length") from None
        limit = self.server.settings.http_max_body
        if length > limit:
            self.close_connection = True  # do not read a body this large
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limit} bytes")
        raw = self.rfile.read(length) if length > 0 else b""
        if content_type != "application/json":
            # 400 rather than 415: the Supabase Edge Function contract answers 400 here.
            raise BadRequest(
                HTTPStatus.BAD_REQUEST,
                f"expected Content-Type application/json, got {content_type or 'none'}",
            )
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from None

    def _drain_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= self.server.settings.http_max_body:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _json(self, status: HTTPStatus, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), "application/json", headers)

    def _error(self, status: HTTPStatus, message: str, *, allow: str | None = None) -> None:
        self._json(status, {"error": db.redact(message)}, {"Allow": allow} if allow else None)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


POST_ROUTES = {
    "/embed": Handler._embed,
    "/functions/v1/embed": Handler._push,
    "/search": Handler._search,
}


def serve(worker: Worker, settings: Settings) -> Server:
    """Starts the server in a background thread; `shutdown()` stops it."""
    server = Server(worker, settings)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    logger.info("HTTP on %s", server.url)
    return server
