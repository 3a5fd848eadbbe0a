"""The worker's HTTP side, on when EMBED_HTTP_PORT is set (bind address EMBED_HTTP_HOST).

  GET  /healthz             the process is alive and its pipeline threads are running
  GET  /readyz              the database answers and the default model is loaded (200
                            "ready", or 200 "degraded" naming the targets it cannot serve)
  GET  /metrics             Prometheus text
  POST /embed               {"input": "text"} -> {"embedding": [...]} (Supabase's quickstart
                            shape); "input" may also be a list -> {"embeddings": [[...], ...]};
                            blank text (empty or whitespace) -> null, as the worker stores none
  POST /functions/v1/embed  the Supabase guide's Edge Function contract (worker.push): 200
                            with {completedJobs, failedJobs} and x-completed-jobs/x-failed-jobs
  POST /search              {"table", "query", "k"} -> {"results": [...]}: nearest rows, or for
                            a chunked target documents with their best chunk (worker.search)

POST routes take an optional bearer token (EMBED_HTTP_TOKEN), compared in constant time. Bound
to anything but loopback without a token, they answer 403 unless the operator opts in with
EMBED_HTTP_ALLOW_UNAUTHENTICATED=1. Bodies are limited to EMBED_HTTP_MAX_BODY bytes; malformed
input (a lone surrogate included) is a 400 with the reason. A connection silent for
EMBED_HTTP_TIMEOUT_SECONDS is closed (slow clients cannot pin threads), and at most
EMBED_HTTP_MAX_CONNECTIONS are served at once; more get 503 with Retry-After.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker import db, exceptions, metrics
from worker.http.readiness import ReadinessProbe
from worker.models import catalog, files

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.process.runner import Worker

logger = logging.getLogger(__name__)

MAX_INPUTS = 256  # texts per /embed request
_BUSY = b'{"error": "too many concurrent requests; retry shortly"}'
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


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
        self.slots = threading.BoundedSemaphore(settings.http_max_connections)
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

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "embed-worker"

    def setup(self) -> None:
        super().setup()
        # A socket timeout on every read and write: a client that stalls mid-request is cut off.
        self.connection.settimeout(self.server.settings.http_timeout_seconds)

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
            if self.server.post_refusal:
                self._drain_body()
                raise BadRequest(HTTPStatus.FORBIDDEN, self.server.post_refusal)
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
            return
        # Serving, but some targets' jobs wait: ready (the process works), and says which.
        unservable = self.server.readiness.unservable_targets()
        if unservable:
            self._json(HTTPStatus.OK, {"status": "degraded", "deferred_targets": unservable})
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
        self._check_model(model_name)
        # Blank text gets no vector, as the worker clears the embedding of a blank row.
        wanted = [i for i, text in enumerate(texts) if text.strip()]
        rows: list[list[float] | None] = [None] * len(texts)
        if wanted:
            vectors = self.server.worker.embedders.get(model_name).embed([texts[i] for i in wanted])
            for i, vector in zip(wanted, vectors, strict=True):
                rows[i] = [round(float(x), 7) for x in vector]
        self._json(
            HTTPStatus.OK,
            {"embeddings": rows} if isinstance(given, list) else {"embedding": rows[0]},
        )

    def _check_model(self, name: str) -> None:
        """Only models already loaded or configured (the default, the targets'), or registry
        models already on disk: a request never names a path, never starts a download."""
        worker = self.server.worker
        configured = {self.server.settings.model} | {
            t.model for t in worker.registry.snapshot().values()
        }
        if name in worker.embedders.loaded() or name in configured:
            return
        if name in catalog.REGISTRY and not files.looks_like_path(name):
            try:
                files.locate(name)
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
        from worker.http import push

        try:
            result = push.process(self.server.worker, body)
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
            body = json.loads(raw)
            # JSON escapes can spell lone surrogates ("\\ud800"), which no model can encode.
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(
                HTTPStatus.BAD_REQUEST, "malformed JSON: a string holds a lone surrogate"
            ) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from None
        return body

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


def post_refusal(settings: Settings) -> str | None:
    """Why POST routes are refused, or None: bound beyond loopback with no token and no
    explicit EMBED_HTTP_ALLOW_UNAUTHENTICATED=1, anyone who can reach the port could make the
    worker embed (CPU) and enqueue work."""
    if settings.http_token or _is_loopback(settings.http_host):
        return None
    if settings.http_allow_unauthenticated:
        return None
    return (
        f"POST routes are off: HTTP listens on {settings.http_host} without EMBED_HTTP_TOKEN. "
        "Set EMBED_HTTP_TOKEN (clients send Authorization: Bearer <token>), or "
        "EMBED_HTTP_ALLOW_UNAUTHENTICATED=1 if the network in front of the worker is trusted."
    )


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except (OSError, ValueError):
            return False


def serve(worker: Worker, settings: Settings) -> Server:
    """Starts the server in a background thread; `shutdown()` stops it."""
    server = Server(worker, settings)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    logger.info("HTTP on %s", server.url)
    if server.post_refusal:
        logger.warning("%s", server.post_refusal)
    return server
