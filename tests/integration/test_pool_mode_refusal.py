"""EMBED_POOL_MODE=session behind a transaction pooler is refused at start, through a real
PgBouncer (worker/pooler.py, docs/poolers.md). The worker ran there: its session settings reached
the pool's other clients, theirs reached its statements, and its watchdog could end another
client's server session; only doctor warned."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support import pgbouncer
from tests.support.cluster import free_port
from tests.support.fetch import fetch_value
from tests.support.in_flight import in_process_worker
from tests.support.process import run_cli
from worker import exits
from worker.config import Settings
from worker.http.server import serve
from worker.models.loaded import LoadedModels

Conn = psycopg.Connection[Any]

SEARCH_PATH = "SELECT current_setting('search_path')"


@contextmanager
def through(
    dsn: str, *, mode: str = "transaction", pool_size: int = 1, round_robin: bool = False
) -> Iterator[str]:
    """`dsn` through PgBouncer in `mode`, `pool_size` server connections for its user, handed
    out oldest first when `round_robin`."""
    if reason := pgbouncer.available():
        pytest.skip(reason)
    params = conninfo_to_dict(dsn)
    server, user = int(str(params["port"])), str(params["user"])
    with pgbouncer.transaction_pooler(
        server, [user], pool_size=pool_size, mode=mode, round_robin=round_robin
    ) as port:
        yield make_conninfo(dsn, port=str(port))


def watched_docs(conn: Conn, model: str) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'cats sleep'), (2, 'stocks fell')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))


def embedded(conn: Conn) -> int:
    return int(fetch_value(conn, "SELECT count(embedding) FROM docs"))


def search_paths(pooled: str, pool_size: int) -> list[str]:
    """The search path of each of the pool's server sessions: `pool_size` clients, each in a
    transaction (so holding a server session of its own) at once."""
    with ExitStack() as stack:
        clients = [stack.enter_context(psycopg.connect(pooled)) for _ in range(pool_size)]
        return [str(fetch_value(client, SEARCH_PATH)) for client in clients]


def assert_refused(result: subprocess.CompletedProcess[str], url: str = "DATABASE_URL") -> None:
    assert result.returncode == exits.USAGE, result.stderr[-3000:]
    assert f"EMBED_POOL_MODE=session, but {url} reaches a transaction pooler (" in result.stderr
    assert "set EMBED_POOL_MODE=transaction (docs/poolers.md)" in result.stderr


@pytest.mark.parametrize("pool_size", [1, 3])
def test_the_worker_refuses_session_mode_behind_a_transaction_pooler_and_starts_in_transaction_mode(
    conn: Conn, dsn: str, minilm: str, pool_size: int
) -> None:
    watched_docs(conn, minilm)
    with through(dsn, pool_size=pool_size) as pooled:
        path = search_paths(pooled, 1)[0]
        session = {"EMBED_POOL_MODE": "session"}
        assert_refused(run_cli("run", "--once", "--database-url", pooled, env=session))
        assert embedded(conn) == 0
        # Refused before any setting of ours reached a server session of the pool.
        assert search_paths(pooled, pool_size) == [path] * pool_size
        # Serving HTTP too (a worker that runs on, not a one-shot run): it ends on its own.
        serving = {**session, "EMBED_HTTP_PORT": str(free_port())}
        assert_refused(run_cli("run", "--database-url", pooled, env=serving, timeout=60))
        transaction = {"EMBED_POOL_MODE": "transaction"}
        result = run_cli("run", "--once", "--database-url", pooled, env=transaction)
        assert result.returncode == exits.OK, result.stderr[-3000:]
    assert embedded(conn) == 2


@pytest.mark.parametrize("pool_size", [2, 3])
def test_a_round_robin_transaction_pooler_is_refused_too(
    conn: Conn, dsn: str, minilm: str, pool_size: int
) -> None:
    """A transaction pooler that hands out its idle server connections oldest first
    (PgBouncer's server_round_robin), its pool warm: the check's connection ran its transaction
    in one server session, the second connection in the next one, and the first's next
    transaction in the one left, its first again, so the pooler passed for a session pooler
    and the worker started in session mode there."""
    watched_docs(conn, minilm)
    with through(dsn, pool_size=pool_size, round_robin=True) as pooled:
        paths = search_paths(pooled, pool_size)  # (every server connection of the pool open)
        assert_refused(run_cli("run", "--once", "--database-url", pooled))
        assert_refused(run_cli("status", "--database-url", pooled))
        assert search_paths(pooled, pool_size) == paths
    assert embedded(conn) == 0


def test_the_commands_refuse_session_mode_behind_a_transaction_pooler(conn: Conn, dsn: str) -> None:
    with through(dsn, pool_size=3) as pooled:
        for argv in (("status",), ("failures", "--retry"), ("migrate",)):
            result = run_cli(*argv, "--database-url", pooled, env={"EMBED_POOL_MODE": "session"})
            assert_refused(result)
        result = run_cli("status", "--database-url", pooled, env={"EMBED_POOL_MODE": "transaction"})
        assert result.returncode == exits.OK, result.stderr


def test_embed_and_model_list_refuse_session_mode_behind_a_transaction_pooler(
    conn: Conn, dsn: str, minilm: str
) -> None:
    """`embed` asks the database for its default model (EMBED_MODEL unset) or for a remote
    model of the name it was given, and `model list` for the registered ones: in session mode
    behind a transaction pooler they connected without the check, their session settings on a
    server session of the pool. Refused before any, as the other commands; a model named by its
    path needs no database, and embeds."""
    conn.execute("SELECT embeddings.set_default_model(%s)", (minilm,))
    with through(dsn, pool_size=3) as pooled:
        path = search_paths(pooled, 1)[0]
        session = {"EMBED_POOL_MODE": "session", "EMBED_MODEL": "", "DATABASE_URL": pooled}
        for argv in (
            ("embed", "cats"),
            ("embed", "--model", "some-remote", "cats"),
            ("model", "list"),
        ):
            assert_refused(run_cli(*argv, env=session))
        assert search_paths(pooled, 3) == [path] * 3
        assert run_cli("embed", "--model", minilm, "cats", env=session).returncode == exits.OK
        transaction = {**session, "EMBED_POOL_MODE": "transaction"}
        embedded_there = run_cli("embed", "cats", env=transaction)
        assert embedded_there.returncode == exits.OK, embedded_there.stderr[-3000:]
        assert f"model {minilm} (the database's default model" in embedded_there.stderr
        listed = run_cli("model", "list", env=transaction)
        assert listed.returncode == exits.OK, listed.stderr[-3000:]


def test_the_search_role_s_url_behind_a_transaction_pooler_is_refused_too(
    conn: Conn, dsn: str, minilm: str
) -> None:
    """POST /search's connections (EMBED_SEARCH_DATABASE_URL) made session settings on the pool
    that URL reaches, whatever DATABASE_URL reached: `run` refuses it at start, as `search`
    as that role does."""
    watched_docs(conn, minilm)
    with through(dsn, pool_size=3) as pooled:
        env = {"EMBED_POOL_MODE": "session", "EMBED_SEARCH_DATABASE_URL": pooled}
        refused = run_cli("run", "--once", "--database-url", dsn, env=env)
        assert_refused(refused, "EMBED_SEARCH_DATABASE_URL")
        searched = run_cli("search", "docs", "cats", env={**env, "DATABASE_URL": dsn})
        assert_refused(searched, "EMBED_SEARCH_DATABASE_URL")
        env["EMBED_POOL_MODE"] = "transaction"
        result = run_cli("run", "--once", "--database-url", dsn, env=env)
        assert result.returncode == exits.OK, result.stderr[-3000:]
    assert embedded(conn) == 2


def test_session_mode_starts_on_the_server_itself_and_behind_a_session_pooler(
    conn: Conn, dsn: str, minilm: str
) -> None:
    watched_docs(conn, minilm)
    with through(dsn, mode="session", pool_size=3) as pooled:
        result = run_cli("run", "--once", "--database-url", pooled)
        assert result.returncode == exits.OK, result.stderr[-3000:]
        assert run_cli("status", "--database-url", pooled).returncode == exits.OK
    assert embedded(conn) == 2
    assert run_cli("run", "--once", "--database-url", dsn).returncode == exits.OK


def test_the_http_side_makes_no_session_behind_the_pooler_before_the_check(
    conn: Conn, dsn: str, settings: Settings, embedders: LoadedModels
) -> None:
    """`run` serves HTTP from the start, before start-up looked at what is in front: /readyz
    connected as configured (session settings of ours on a server session of the pool) and POST
    /search searched. Until the check passed, /readyz connects per transaction and the routes
    that use the database answer 503; then the worker refuses."""
    watched_docs(conn, settings.model or "")
    with through(dsn) as pooled:
        path = search_paths(pooled, 1)[0]
        worker = in_process_worker(
            settings, embedders, once=True, database_url=pooled, pool_mode="session"
        )
        server = serve(worker, settings.with_overrides(database_url=pooled, http_port=0))
        try:
            status, body = get_json(server.url + "/readyz")
            assert status == 503 and body["status"] == "not ready", body
            assert search_paths(pooled, 1) == [path]  # (its check made no session of ours)
            status, body = post_json(server.url + "/search", {"table": "docs", "query": "cats"})
            assert status == 503 and "EMBED_POOL_MODE=session" in body["error"], body
            assert worker.run() == exits.USAGE
        finally:
            server.shutdown()
        assert search_paths(pooled, 1) == [path]


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())
