"""pg_net for tests of embeddings.dispatch(): the real extension where the server preloads it,
else a stand-in of the two objects dispatch() uses (net.http_post, net._http_response).

The real pg_net runs one background worker, in one database (pg_net.database_name): `RealNet`
points it at the test's database (holding an advisory lock of the cluster's maintenance
database meanwhile, so that two test processes never move it at once) and back afterwards. It
posts for real: to a port nothing listens on (connection refused) and to `Answering`, a local
HTTP server that answers each path's status (`/status/401`).

pg_net has no Debian package (docs/operating.md), so on these machines the suite gets
`StandInNet`: http_post() only records the request, and `answer()` writes the answer the real
pg_net would have written for its URL (a refused connection's error, or the path's status)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from tests.support.cluster import free_port
from tests.support.process import wait_for

Conn = psycopg.Connection[Any]

REFUSED = "Couldn't connect to server"  # pg_net's error_msg for a refused connection
LOCK = 7020_0001  # the advisory lock that serialises moving pg_net's worker


class Answering(http.server.ThreadingHTTPServer):
    """POST /status/<code> answers <code> with a small JSON body."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, status: int) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/status/{status}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
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

    def answer(self, conn: Conn) -> None:
        """Waits until pg_net answered every request dispatch() recorded and has not settled."""
        raise NotImplementedError


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
            INSERT INTO net._http_response (id, status_code, content, error_msg)
            SELECT q.id,
                   CASE WHEN q.url LIKE %(refused)s THEN NULL ELSE split_part(q.url, '/status/', 2)::integer END,
                   CASE WHEN q.url LIKE %(refused)s THEN NULL ELSE '{"error": "stand-in answer"}' END,
                   CASE WHEN q.url LIKE %(refused)s THEN %(error)s END
            FROM net.http_request_queue q
            WHERE NOT EXISTS (SELECT FROM net._http_response r WHERE r.id = q.id)
            """,
            {"refused": self.refused_url, "error": REFUSED},
        )


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
