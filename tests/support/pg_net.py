"""pg_net for tests of embeddings.dispatch(): the real extension where the server preloads it,
else a stand-in of the two objects dispatch() uses (net.http_post, net._http_response).

The real pg_net runs one background worker, in one database (pg_net.database_name): `RealNet`
points it at the test's database (holding an advisory lock of the cluster's maintenance
database meanwhile, so that two test processes never move it at once) and back afterwards. It
posts for real: to a port nothing listens on (connection refused) and to `Answering`, a local
HTTP server that answers each path's status (`/status/401`), the status the test sets
(`/switch`), or nothing before pg_net's timeout (`/hang`).

pg_net has no Debian package (docs/operating.md), so on these machines the suite gets
`StandInNet`: http_post() only records the request, and `answer()` writes the answer the real
pg_net would have written for its URL (a refused connection's error, a timeout, or the path's
status); `deliver()` posts the requests for real, as pg_net would, and records their answers."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg

from tests.support.cluster import free_port
from tests.support.process import wait_for

Conn = psycopg.Connection[Any]

REFUSED = "Couldn't connect to server"  # pg_net's error_msg for a refused connection
TIMED_OUT = "Timeout of %s ms reached"  # how pg_net's error_msg for a timeout starts
HANG_SECONDS = 10.0  # how long /hang keeps a request unanswered: past any test's pg_net timeout
LOCK = 7020_0001  # the advisory lock that serialises moving pg_net's worker


class Answering(http.server.ThreadingHTTPServer):
    """POST /status/<code> answers <code> with a small JSON body; POST /switch answers
    `switch_status`; POST /hang answers nothing for HANG_SECONDS (or until stop())."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.switch_status = 503
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, status: int | str) -> str:
        path = status if isinstance(status, str) else f"status/{status}"
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Answering

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/hang":
            self.server.stopping.wait(HANG_SECONDS)
            return
        if self.path == "/switch":
            status = self.server.switch_status
        else:
            status = int(self.path.rsplit("/", 1)[-1])
        body = b'{"error": "stand-in answer"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Net:
    """What a test of dispatch() needs of pg_net: URLs that fail or answer a status, and
    every request answered before the next dispatch()."""

    real = False

    def __init__(self, server: Answering) -> None:
        self.server = server
        self.refused_url = f"http://127.0.0.1:{free_port()}/functions/v1/embed"

    def url(self, status: int | None) -> str:
        """None: a connection refused."""
        return self.refused_url if status is None else self.server.url(status)

    @property
    def hanging_url(self) -> str:
        """A worker that takes the connection and never answers: pg_net's timeout."""
        return self.server.url("hang")

    @property
    def switch_url(self) -> str:
        """Answers the status `switch(status)` set last (503 at first)."""
        return self.server.url("switch")

    def switch(self, status: int) -> None:
        self.server.switch_status = status

    def answer(self, conn: Conn) -> None:
        """Waits until pg_net answered every request dispatch() recorded and has not settled."""
        raise NotImplementedError

    def deliver(self, conn: Conn) -> None:
        """Has every request dispatch() made posted to its URL, and waits for the answers."""
        self.answer(conn)


class RealNet(Net):
    real = True

    def answer(self, conn: Conn) -> None:
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT bool_and(EXISTS (SELECT FROM net._http_response r WHERE r.id = d.request_id))"
                    " FROM embeddings.dispatched d WHERE d.answered_at IS NULL"
                ).fetchone()
                != (False,)
            ),
            timeout=30,
            what="pg_net's answers",
        )


class StandInNet(Net):
    def answer(self, conn: Conn) -> None:
        conn.execute(
            """
            INSERT INTO net._http_response (id, status_code, content, timed_out, error_msg)
            SELECT q.id, a.status, CASE WHEN a.status IS NOT NULL THEN '{"error": "stand-in answer"}' END,
                   q.url = %(hang)s, a.error
            FROM net.http_request_queue q
            CROSS JOIN LATERAL (
                SELECT CASE WHEN q.url IN (%(refused)s, %(hang)s) THEN NULL
                            WHEN q.url = %(switch)s THEN %(switch_status)s
                            ELSE split_part(q.url, '/status/', 2)::integer END AS status,
                       CASE WHEN q.url = %(refused)s THEN %(error)s
                            WHEN q.url = %(hang)s THEN format(%(timed_out)s, q.timeout_milliseconds) END AS error
            ) a
            WHERE NOT EXISTS (SELECT FROM net._http_response r WHERE r.id = q.id)
            """,
            {
                "refused": self.refused_url,
                "hang": self.hanging_url,
                "switch": self.switch_url,
                "switch_status": self.server.switch_status,
                "error": REFUSED,
                "timed_out": TIMED_OUT,
            },
        )

    def deliver(self, conn: Conn) -> None:
        """Posts each request not answered yet, as pg_net's worker would (within its timeout),
        and records the answer as it would."""
        requests = conn.execute(
            "SELECT q.id, q.url, q.body, q.headers, q.timeout_milliseconds FROM net.http_request_queue q"
            " WHERE NOT EXISTS (SELECT FROM net._http_response r WHERE r.id = q.id) ORDER BY q.id"
        ).fetchall()
        for request_id, url, body, headers, timeout_ms in requests:
            status, content, error = _post(url, body, headers or {}, timeout_ms / 1000)
            conn.execute(
                "INSERT INTO net._http_response (id, status_code, content, timed_out, error_msg)"
                " VALUES (%s, %s, %s, false, %s)",
                (request_id, status, content, error),
            )


def _post(
    url: str, body: Any, headers: dict[str, str], timeout: float
) -> tuple[int | None, str | None, str | None]:
    """(status, content, error) as pg_net records them."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), None
    except urllib.error.HTTPError as answered:
        with answered:
            return answered.code, answered.read().decode(), None
    except (urllib.error.URLError, OSError) as failed:
        return None, None, str(failed)


def preloaded(conn: Conn) -> bool:
    row = conn.execute(
        "SELECT 'pg_net' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))"
        " AND EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_net')"
    ).fetchone()
    return bool(row and row[0])


@contextlib.contextmanager
def net_for(conn: Conn, admin_dsn: str) -> Iterator[Net]:
    """pg_net for the database of `conn` (autocommit): the real one, else the stand-in.
    `admin_dsn`: the server's maintenance database, as a superuser."""
    server = Answering()
    try:
        if preloaded(conn):
            with _worker_in(conn, admin_dsn):
                yield RealNet(server)
        else:
            _stand_in(conn)
            yield StandInNet(server)
    finally:
        server.stop()


@contextlib.contextmanager
def _worker_in(conn: Conn, admin_dsn: str) -> Iterator[None]:
    database = conn.info.dbname
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_net")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
        try:
            _move_worker(admin, conn, database)
            yield
        finally:
            admin.execute("ALTER SYSTEM RESET pg_net.database_name")
            admin.execute("SELECT pg_reload_conf()")
            conn.execute("SELECT net.worker_restart()")
            admin.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))


def _move_worker(admin: Conn, conn: Conn, database: str) -> None:
    admin.execute(f"ALTER SYSTEM SET pg_net.database_name = '{database}'")
    admin.execute("SELECT pg_reload_conf()")
    conn.execute("SELECT net.worker_restart()")
    wait_for(
        lambda: (
            admin.execute(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type LIKE 'pg_net%%'"
                " AND datname = %s)",
                (database,),
            ).fetchone()
            == (True,)
        ),
        timeout=30,
        what="pg_net's worker in the test's database",
    )


def _stand_in(conn: Conn) -> None:
    """pg_net's two objects that dispatch() uses, with pg_net's definitions of their columns."""
    conn.execute(
        """
        CREATE SCHEMA net;
        CREATE TABLE net.http_request_queue (id bigserial, url text NOT NULL, body jsonb,
                                             headers jsonb, timeout_milliseconds integer);
        CREATE TABLE net._http_response (id bigint, status_code integer, content_type text,
                                         headers jsonb, content text, timed_out boolean,
                                         error_msg text, created timestamptz NOT NULL DEFAULT now());
        CREATE INDEX ON net._http_response (created);
        CREATE FUNCTION net.http_post(url text, body jsonb DEFAULT '{}', params jsonb DEFAULT '{}',
                                      headers jsonb DEFAULT '{}', timeout_milliseconds integer DEFAULT 5000)
        RETURNS bigint LANGUAGE sql AS $$
            INSERT INTO net.http_request_queue (url, body, headers, timeout_milliseconds)
            VALUES (url, body, headers, timeout_milliseconds) RETURNING id
        $$;
        """
    )
