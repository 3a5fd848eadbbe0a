"""A hostile tenant in every hook, every operation we have (issue 36).

tests/security/harness.py builds the world: the table owner's tables of every kind, watched,
with its code planted at every hook it controls, each piece recording as whom it ran, leaving
session state behind and trying to escalate, once for the module; every case runs in a copy of
its database. Here every product operation runs, as each role the docs tell operators to use,
and after each:
- the owner's code ran as the owner only (or as a role that itself read the owner's table);
- no escalation succeeded, nothing of the other tenant reached the owner;
- the worker still serves the other tenant: a row it adds afterwards is embedded.

Adding an operation is one entry in OPERATIONS; docs/security.md's "What the harness runs"
table lists them (test_the_documented_operations_are_the_harness_operations)."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import os
import re
import socket
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.integration.conftest import case_settings, register_tiny_models
from tests.security import harness
from tests.security.conftest import Roles, create_roles, drop_roles
from tests.support import pg_net
from tests.support.cluster import Cluster
from tests.support.docs import DOCS
from tests.support.documents import encrypted, pdf_bytes
from tests.support.fetch import fetch_value
from tests.support.hardening import HARDENING
from tests.support.in_flight import in_process_worker
from tests.support.models import MINILM, require_minilm
from tests.support.process import WorkerProcess, run_cli
from tests.support.provider_server import ProviderServer
from tests.support.rerank_server import RerankServer
from worker import exceptions, schema
from worker.cli import parser
from worker.http import push
from worker.http import server as http_server
from worker.models.files import ModelLocation
from worker.models.loaded import LoadedModels
from worker.models.query_batch import QueryBatchers
from worker.models.remote import breaker as breakers
from worker.models.reranker import LoadedRerankers
from worker.process.runner import Worker
from worker.retrieval import search
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest

SUPERUSER, WORKER, APPLICATION = "superuser", "worker role", "application role"


@dataclass
class Context:
    world: harness.World
    role: str
    run_once: Callable[..., Worker]
    embedders: LoadedModels
    model_path: str

    @property
    def roles(self) -> Roles:
        return self.world.roles

    @property
    def dsn(self) -> str:
        names = {SUPERUSER: None, WORKER: self.roles.worker, APPLICATION: self.roles.writer}
        return self.roles.dsn_of(names[self.role])

    def sql(self, *statements: str) -> None:
        with self.roles.connect(None if self.role == SUPERUSER else self._name()) as conn:
            for statement in statements:
                conn.execute(statement.encode())
                conn.execute("SELECT now(), clock_timestamp()")  # the session, after

    def cli(self, *argv: str, refused: bool = False, env: dict[str, str] | None = None) -> Any:
        """The real command line: exit 0 or 1 (a problem reported), or 2 where `refused`;
        `env` over the role's DATABASE_URL and the models'."""
        given = {"DATABASE_URL": self.dsn, "EMBED_MODEL_PATH": self.model_path}
        result = run_cli(*argv, env={**given, "EMBED_MODEL": MINILM, **(env or {})})
        assert result.returncode in ((2,) if refused else (0, 1)), result.stderr
        return result

    def _name(self) -> str:
        return {WORKER: self.roles.worker, APPLICATION: self.roles.writer}[self.role]


def _worker(ctx: Context) -> None:
    ctx.run_once(database_url=ctx.dsn, batch_size=3)


def _model_change(ctx: Context) -> None:
    ctx.sql("SELECT embeddings.watch('docs_row', 'body', model => 'tiny-a')")
    ctx.run_once(database_url=ctx.roles.worker_dsn, batch_size=3)


REMOTE_KEY = "sk-harness-0123456789abcdef"


def _remote_model(ctx: Context) -> None:
    """The owner's side-store table changes to a remote model served by a stand-in provider
    (tests/support/provider_server.py), and the worker embeds it through the provider."""
    breakers.reset()
    saved = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = REMOTE_KEY
    try:
        with ProviderServer(kind="openai", dims=8, api_key=REMOTE_KEY) as server:
            # (its argument checks, check_model_arguments() and check_range(), refuse first)
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="max_in_flight is"):
                ctx.sql(
                    f"SELECT embeddings.register_model('remote-8', 8, 'openai', '{server.base_url}',"
                    " 'test-model', max_in_flight => 0)"
                )
            ctx.sql(
                f"SELECT embeddings.register_model('remote-8', 8, 'openai', '{server.base_url}',"
                f" 'test-model', max_tokens => 40, tokenizer => '{MINILM}')",
                "SELECT embeddings.watch('docs_side', 'body', model => 'remote-8', store => 'side')",
            )
            ctx.run_once(database_url=ctx.roles.worker_dsn, batch_size=3)
            assert server.requests, "nothing reached the stand-in provider"
    finally:
        if saved is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = saved
        breakers.reset()


def _forget_jobs_then(statement: str) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        with ctx.roles.connect() as su:
            # (pgmq's functions set no search path: the superuser's own session, whose path
            # reaches the overloads planted in `public` and in a schema named after it, would
            # run them, as any session of that role would)
            su.execute("SET search_path = pg_catalog, pg_temp")
            su.execute("SELECT pgmq.purge_queue('embedding_jobs')")
            su.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")
            su.execute("DELETE FROM embeddings.backfills")
        ctx.sql(statement)

    return run


def _sweep_beside_dead_letters(ctx: Context) -> None:
    """sweep() with a dead letter of a row there (key 1) and of a row gone (key 99999) in every
    watched table: their rows are asked of each table's embeddings_<id>_existing(), as its
    owner (resolve_gone_failures(), sql/60_sweep.sql); the letters of rows gone are resolved."""
    with ctx.roles.connect() as su:
        su.execute("SET search_path = pg_catalog, pg_temp")  # (past the planted overloads)
        su.execute(
            "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message,"
            " attempts, last_error) SELECT t.id, t.source::text, k.key, t.queue,"
            " jsonb_build_object('target', t.id, 'keys', jsonb_build_array(k.key)), 5, 'boom'"
            " FROM embeddings.targets t, (VALUES ('1'::jsonb), ('99999')) AS k(key)"
        )
    _forget_jobs_then("SELECT embeddings.sweep()")(ctx)
    with ctx.roles.connect() as su:
        su.execute("SET search_path = pg_catalog, pg_temp")
        left = su.execute(
            "SELECT row_key::int, count(*) FROM embeddings.failures GROUP BY 1 ORDER BY 1"
        ).fetchall()
        targets = su.execute("SELECT count(*) FROM embeddings.targets").fetchone()
    assert targets is not None and left == [(1, targets[0])], left


def _http_search(ctx: Context) -> None:
    """What POST /search runs (worker/http/work.py: Work.search), on the pooled connections it
    uses (worker/retrieval/pool.py), as the search role (EMBED_SEARCH_DATABASE_URL), the
    application's: one connection, so every search after the first runs in a session the
    owner's code ran in before, and must find none of what it left. A search's last check
    (of its target's version) runs in the session as the owner's code left it, in the
    ranking's exchange; the pool DISCARDs the session after the answer, before the connection
    is taken again. Each search runs twice: the first reads the table's target, the second
    checks it."""
    searches = SearchConnections(ctx.dsn, max_size=1)
    service = search.SearchService(searches.connection, QueryBatchers(ctx.embedders.get))
    try:
        asked = [{"table": t} for t in ("docs_row", "docs_side", "docs_chunked", "docs_fn")]
        asked += [{"table": "docs_document"}, {"table": "docs_fn", "text_match": "any"}]  # BM25
        for ask in asked * 2:  # (docs_side and docs_fn have full-text search: hybrid)
            request = SearchRequest.parse({**ask, "query": "a document of", "k": 3})
            service.search(request)
        # A column the table is not watched with: its watched ones looked up (find_target).
        wrong = SearchRequest.parse({"table": "docs_row", "query": "a", "column": "v"})
        with pytest.raises(exceptions.TargetError, match="its embedding column is 'embedding'"):
            service.search(wrong)
        with searches.connection() as conn:  # one search's own SQL, in the pooled session
            search.run(conn, ctx.embedders.get, SearchRequest.parse({**asked[3], "query": "a"}))
        with searches.connection() as conn:  # what the next search's session holds
            settings = dict(conn.execute(harness.SESSION_STATE_NOW).fetchall())
            assert settings == harness.session_state_of_a_fresh(ctx.dsn), settings
    finally:
        searches.close()


def _cli_search(ctx: Context) -> None:
    """`embed-worker search` with the worker's environment: DATABASE_URL the worker role's,
    EMBED_SEARCH_DATABASE_URL the application's, the role it searches as (as POST /search
    does), in a session where the owner's policies and content functions run."""
    env = {"DATABASE_URL": ctx.roles.worker_dsn, "EMBED_SEARCH_DATABASE_URL": ctx.dsn}
    for table in ("docs_row", "docs_side", "docs_chunked", "docs_fn"):
        result = ctx.cli("search", table, "a document of", "-k", "3", "--json", env=env)
        assert result.returncode == 0, result.stderr


HOSTILE_CLIENTS = range(8)


def _http_server_search(ctx: Context) -> None:
    """POST /search through a real `embed-worker run --no-pull`, searching as the application
    role (EMBED_SEARCH_DATABASE_URL) over one keep-alive connection: its searches run one after
    another on the one pooled session, each after the owner's code ran in it, and each must
    answer as the first did. Meanwhile HOSTILE_CLIENTS connections that can reach the port
    hold heads sent half, with a wrong token: the one slot stays the searches'."""
    token = "harness-search-token"
    server = WorkerProcess(
        ctx.roles.worker_dsn,
        {
            "EMBED_SEARCH_DATABASE_URL": ctx.dsn,
            "EMBED_HTTP_TOKEN": token,
            "EMBED_HTTP_MAX_CONNECTIONS": "1",
            "EMBED_MODEL": MINILM,
            "EMBED_MODEL_PATH": ctx.model_path,
            "EMBED_THREADS": "1",
        },
        "--no-pull",
    )
    try:
        server.wait_ready()
        assert server.port is not None
        hostile = [socket.create_connection(("127.0.0.1", server.port)) for _ in HOSTILE_CLIENTS]
        for sock in hostile:
            sock.sendall(b"POST /search HTTP/1.1\r\nAuthorization: Bearer wrong\r\nX-Slow: ")
        client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        answers: dict[str, list[Any]] = {}
        for round_ in range(2):
            for table in ("docs_row", "docs_side", "docs_chunked", "docs_fn"):
                ask = {"table": table, "query": "document", "k": 3}
                if table == "docs_side":  # the rerank stage reads the results' text
                    ask["rerank"] = "tiny-rerank"
                body = json.dumps(ask)
                client.request(
                    "POST",
                    "/search",
                    body,
                    {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                )
                response = client.getresponse()
                answer = json.loads(response.read())
                assert response.status == 200, (table, answer)
                keys = [r["key"] for r in answer["results"]]
                assert answers.setdefault(table, keys) == keys, (round_, table, keys)
        client.close()
        for sock in hostile:
            sock.close()
    finally:
        server.stop()
    with ctx.roles.connect() as su:  # the searches did run the owner's code, in the server
        ran = su.execute("SELECT count(*) FROM loot WHERE what = 'ran: row security policy'")
        assert ran.fetchone() != (0,)


def _sql_search(ctx: Context) -> None:
    vector = "(SELECT embedding FROM docs_row WHERE id = 1 AND embedding IS NOT NULL)"
    ctx.sql(
        f"SELECT * FROM embeddings.search('docs_row', {vector}, 3)",
        # A filter's condition and the check of its values (search_filter_check()).
        f"""SELECT * FROM embeddings.search('docs_row', {vector}, 3, '{{"id": {{"in": [1, 2]}}}}')""",
        f"SELECT * FROM embeddings.search('docs_side', {vector}, 3)",
        f"SELECT * FROM embeddings.match_chunks('docs_chunked', {vector}, 3)",
        f"SELECT * FROM embeddings.search('docs_document', {vector}, 3)",
        f"SELECT * FROM embeddings.hybrid_search('docs_side', 'document', {vector}, 3)",
        # Any word, ranked by BM25 (sql/59_bm25.sql). (docs_fn's, whose policy is the owner's
        # code, runs in the application's own session here: _http_search() runs it.)
        f"SELECT * FROM embeddings.hybrid_search('docs_side', 'a document of', {vector}, 3,"
        " text_match => 'any')",
        # The same through the ranking's statements for large tables (sql/58_search.sql's
        # ranking_code()): the common words counted, then the df sampled (TABLESAMPLE).
        "SET embeddings.bm25_prune_rows = 0",
        f"SELECT * FROM embeddings.hybrid_search('docs_side', 'a document of', {vector}, 3,"
        " text_match => 'any')",
        "SET embeddings.bm25_sample_rows = 0",
        f"SELECT * FROM embeddings.hybrid_search('docs_side', 'a document of', {vector}, 3,"
        " text_match => 'any')",
    )
    # A column the table is not watched with: refused naming those it is (watched_columns_hint(),
    # run as the caller).
    with pytest.raises(psycopg.errors.UndefinedObject) as refused:
        ctx.sql(
            f"SELECT * FROM embeddings.search('docs_row', {vector}, 3, embedding_column => 'v')"
        )
    assert "is watched with embedding_column => 'embedding'." in str(
        refused.value.diag.message_hint
    )
    # A filter value its column's type cannot read: refused naming the key and the type.
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="id is a column of type"):
        ctx.sql(f"""SELECT * FROM embeddings.search('docs_row', {vector}, 3, '{{"id": "x"}}')""")


def _hardened_sql_search(ctx: Context) -> None:
    """The searches of `search (SQL)` where an administrator revoked PUBLIC's rights on our
    schemas (docs/security.md) and gave the application role what searches use of ours by name
    (embeddings.grant_search()): the hostile owner's code runs as before, as the owner or the
    searcher, never with more. The owner then alters its tables, and the event trigger makes
    their search functions again: the searcher's as search() is (follow_search_grants()), not
    PUBLIC's."""
    searched = ("docs_row", "docs_side", "docs_chunked", "docs_document")
    with ctx.roles.connect() as su:
        su.execute("SET search_path = pg_catalog, pg_temp")  # (past the planted overloads)
        for statement in HARDENING:
            su.execute(statement)
        su.execute("SELECT embeddings.grant_search(%s)", (ctx.roles.writer,))
    for table in searched:
        with ctx.roles.connect(ctx.roles.owner) as owner:  # (each hook leaves it read-only)
            owner.execute(f"ALTER TABLE {table} ADD COLUMN altered integer")
    with ctx.roles.connect() as su:
        made = su.execute(
            "SELECT pg_catalog.bool_or(pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')),"
            " pg_catalog.bool_and(pg_catalog.has_function_privilege(%s, p.oid, 'EXECUTE')),"
            " pg_catalog.count(*) FROM pg_catalog.pg_proc p JOIN embeddings.targets t"
            " ON p.proname OPERATOR(pg_catalog.~) ('^embeddings_' OPERATOR(pg_catalog.||) t.id"
            " OPERATOR(pg_catalog.||) '_(search|nearest|text_ranking|bm25_ranking|visible)$')"
            " WHERE t.source OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.regclass[])",
            (ctx.roles.writer, list(searched)),
        ).fetchone()
    assert made is not None and made[:2] == (False, True) and made[2] >= 6, made
    _sql_search(ctx)


# Each role's EXECUTE on each target's search functions (searches run them as their caller).
SEARCH_FUNCTION_GRANTS = (
    "SELECT r.rolname::text, p.proname::text FROM pg_catalog.pg_proc p, pg_catalog.pg_roles r"
    " WHERE p.proname OPERATOR(pg_catalog.~) '^embeddings_[0-9]+_(search|nearest|text_ranking|bm25_ranking|visible)$'"
    " AND r.rolname OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.name[])"
    " AND pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')"
)


def _search_grants_before_revoking(ctx: Context) -> None:
    """The application role granted grant_search() and the worker role grant_worker() (the
    world's) while PUBLIC has its rights; the owner alters its tables, and the event trigger
    makes their search functions again (its hooks fire); then PUBLIC's rights are revoked. Each
    role keeps what it could run of them (the functions made before the revocation were
    PUBLIC's alone, and the revocation took them from everyone: follow_search_grants()), and
    the application role searches through them."""
    granted = [ctx.roles.writer, ctx.roles.worker]
    with ctx.roles.connect() as su:
        su.execute("SET search_path = pg_catalog, pg_temp")  # (past the planted overloads)
        su.execute("SELECT embeddings.grant_search(%s)", (ctx.roles.writer,))
        before = set(su.execute(SEARCH_FUNCTION_GRANTS, (granted,)).fetchall())
    for table in ("docs_row", "docs_side", "docs_chunked", "docs_document"):
        with ctx.roles.connect(ctx.roles.owner) as owner:  # (each hook leaves it read-only)
            owner.execute(f"ALTER TABLE {table} ADD COLUMN altered integer")
    with ctx.roles.connect() as su:
        su.execute("SET search_path = pg_catalog, pg_temp")
        for statement in HARDENING:
            su.execute(statement)
        after = set(su.execute(SEARCH_FUNCTION_GRANTS, (granted,)).fetchall())
    assert after == before and len(before) >= 12, (before - after, after - before)
    _sql_search(ctx)


def _embed_and_model_list(ctx: Context) -> None:
    """`embed` with the database's default model (EMBED_MODEL unset), and one it names, and
    `model list`, which read the registry (each reads the schema's release and checks the
    pooler first, since 0.4.0)."""
    with ctx.roles.connect() as su:
        su.execute("SET search_path = pg_catalog, pg_temp")  # (past the planted overloads)
        su.execute("SELECT embeddings.set_default_model(%s)", (MINILM,))
    for argv in (("embed", "a document"), ("embed", "--model", MINILM, "a document")):
        result = ctx.cli(*argv, env={"EMBED_MODEL": ""})
        assert result.returncode == 0 and len(json.loads(result.stdout)[0]) == 384, result.stderr
    listed = ctx.cli("model", "list")
    assert listed.returncode == 0 and MINILM in listed.stdout, listed.stderr


def _http_server_embed(ctx: Context) -> None:
    """A real `embed-worker run --no-pull` as the worker role, its default model the
    database's: GET /healthz, /readyz (the database's check, the stopped targets) and /metrics,
    and POST /embed with the default model and one named."""
    with ctx.roles.connect() as su:
        su.execute("SET search_path = pg_catalog, pg_temp")  # (past the planted overloads)
        su.execute("SELECT embeddings.set_default_model(%s)", (MINILM,))
    token = "harness-embed-token"
    env = {"EMBED_MODEL": "", "EMBED_MODEL_PATH": ctx.model_path, "EMBED_THREADS": "1"}
    server = WorkerProcess(ctx.dsn, {**env, "EMBED_HTTP_TOKEN": token}, "--no-pull")
    try:
        server.wait_ready()
        for path in ("/healthz", "/readyz", "/metrics"):
            status, body = server.get(path)
            assert status == 200, (path, body[-2000:])
        assert b"embed_worker_ready 1.0" in server.get("/metrics")[1]
        client = http.client.HTTPConnection("127.0.0.1", server.port or 0, timeout=30)
        for ask in ({"input": "a document"}, {"input": ["a", "b"], "model": MINILM}):
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            client.request("POST", "/embed", json.dumps(ask), headers)
            response = client.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200, answer
        client.close()
    finally:
        server.stop()


def _failures_retry(ctx: Context) -> None:
    """Dead letters (one of each watched table's, planted) listed and re-queued by id, by
    table (named as the role's own sessions find it: relation_named(), past the overloads
    planted in its path), then all; an id that is no dead letter is refused."""
    with ctx.roles.connect() as su:
        su.execute("SET search_path = pg_catalog, pg_temp")  # (past the planted overloads)
        ids = su.execute(
            "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message,"
            " attempts, last_error) SELECT t.id, t.source::text, '1', t.queue,"
            " jsonb_build_object('target', t.id, 'keys', jsonb_build_array(1)), 5, 'boom'"
            " FROM embeddings.targets t RETURNING id"
        ).fetchall()
    ctx.cli("failures", "docs_row", "--limit", "5")
    ctx.cli("failures", "docs_chunked_chunks", "--limit", "5")  # (its target's)
    ctx.cli("failures", "--id", str(ids[0][0]), "--id", str(ids[-1][0]), "--retry")
    ctx.cli("failures", "docs_row", "--retry")
    ctx.cli("failures", "--retry")
    ctx.cli("failures", "--id", str(ids[0][0]), "--retry", refused=True)  # (re-queued above)


def _status(ctx: Context) -> None:
    """Every table's status, then one table's (named as the role's own sessions find it), and
    a chunk table's (its target's)."""
    ctx.cli("status", "--json")
    ctx.cli("status", "docs_row", "--json")
    ctx.cli("status", "docs_chunked_chunks", "--json")


def _plan(ctx: Context) -> None:
    for table, content in (
        ("docs_row", "body"),
        ("docs_fn", "docs_fn_text"),
        ("docs_row", "docs_row"),
    ):
        ctx.cli("plan", table, "--content", content, "--model", MINILM, "--json")
    ctx.cli("plan", "docs_view", "--content", "body", "--model", MINILM, refused=True)


def _unknown_model(ctx: Context) -> None:
    """The refusals that read the model registry for their hint (unknown_model_hint())."""
    for statement in (
        "SELECT embeddings.watch('docs_row', 'body', model => 'all-MiniLM-L6v2')",
        "SELECT embeddings.set_default_model('gte-smal')",
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown model"):
            ctx.sql(statement)


def _models_registered(ctx: Context) -> None:
    """A registration under a built-in model's name refused (built_in_mismatch(),
    built_in_hint()), a mistaken one made and unregistered; unregister_model() refused for a
    built-in model, a model a target is changing to (model_users()) and the default."""
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is a built-in model"):
        ctx.sql(
            "SELECT embeddings.register_model('gte-small', 64, 'openai', 'http://127.0.0.1:9/v1',"
            " credential => '')"
        )
    ctx.sql(
        "SELECT embeddings.register_model('mistake', 8, 'openai', 'http://127.0.0.1:9/v1',"
        " credential => '')",
        "SELECT embeddings.register_model('mistake', 8, max_in_flight => 2)",  # stays openai
        "SELECT embeddings.unregister_model('mistake')",
    )
    ctx.sql("SELECT embeddings.watch('docs_row', 'body', model => 'tiny-a')")  # a change to it
    for statement, error in (
        ("SELECT embeddings.unregister_model('gte-small')", psycopg.errors.InvalidParameterValue),
        ("SELECT embeddings.unregister_model('tiny-a')", psycopg.errors.ObjectInUse),
    ):
        with pytest.raises(error):
            ctx.sql(statement)
    ctx.sql(
        "SELECT embeddings.cancel_change('docs_row')",
        "SELECT embeddings.set_default_model('tiny-a')",
    )
    with pytest.raises(psycopg.errors.ObjectInUse, match="default model"):
        ctx.sql("SELECT embeddings.unregister_model('tiny-a')")
    ctx.sql("SELECT embeddings.set_default_model('gte-small')")


def _named_fixes(ctx: Context) -> None:
    """The refusals that name what to pass: watch() given column names in SQL's quotes
    (unquoted_identifier(), column_names_hint() read the owner's columns), and a search and a
    plan of a table named but for case or without the double quotes its name needs (the
    tables_alike lookup, as the caller's rights allow)."""
    for statement, error, hint in (
        (
            f"""SELECT embeddings.watch('docs_row', '"body"', model => '{MINILM}')""",
            psycopg.errors.UndefinedColumn,
            "without SQL's double quotes: 'body'.",
        ),
        (
            f"""SELECT embeddings.watch('docs_row', 'body', key => ARRAY['"id"'], model => '{MINILM}')""",
            psycopg.errors.UndefinedColumn,
            "without SQL's double quotes: 'id'.",
        ),
        (
            f"""SELECT embeddings.watch('docs_row', 'body', embedding_column => '"vec"', model => '{MINILM}')""",
            psycopg.errors.InvalidName,
            "embedding_column => 'vec'.",
        ),
        (
            """SELECT embeddings.rewatch('docs_row', '"embedding"')""",
            psycopg.errors.UndefinedObject,
            "is watched with embedding_column => 'embedding'.",
        ),
    ):
        with pytest.raises(error) as refused:
            ctx.sql(statement)
        assert (refused.value.diag.message_hint or "").endswith(hint), refused.value
    alike = "did you mean docs_row?"
    assert alike in ctx.cli("search", '"Docs_Row"', "document", refused=True).stderr
    assert alike in ctx.cli("plan", '"Docs_Row"', "--content", "body", refused=True).stderr
    # A name that is none (a space outside double quotes): tables_alike asked of it quoted.
    for command in (("search", "docs row", "document"), ("plan", "docs row", "--content", "body")):
        refused = ctx.cli(*command, refused=True).stderr
        assert "no table docs row" in refused.replace("'", "") and "CONTEXT" not in refused


def _held_fix(ctx: Context) -> None:
    """What embeddings.stopped tells an operator of held jobs (held_fix()): every target held,
    one of them in a model change (the superuser's case), read as each role reads it."""
    if ctx.role == SUPERUSER:
        ctx.sql("SELECT embeddings.watch('docs_row', 'body', model => 'tiny-a')")
    ctx.sql(  # qualified, as the worker's statements are: the role's path finds planted overloads
        "SELECT embeddings_internal.note_deferrals(pg_catalog.array_agg(id),"
        " pg_catalog.array_agg('held by the harness'::pg_catalog.text), pg_catalog.array_agg(1))"
        " FROM embeddings.targets",
        "SELECT * FROM embeddings_internal.stopped_targets()",
        "SELECT embeddings_internal.clear_deferrals(pg_catalog.array_agg(id)) FROM embeddings.targets",
    )


def _reranked_search(ctx: Context) -> None:
    """The table's reranker set, then searches reranked by it and by one the command names."""
    ctx.sql("SELECT embeddings.set_rerank('docs_side', 'tiny-rerank', depth => 5)")
    ctx.cli("search", "docs_side", "document", "-k", "2")
    ctx.cli("search", "docs_chunked", "document", "-k", "2", "--rerank", "tiny-rerank")
    ctx.sql("SELECT embeddings.set_rerank('docs_side', NULL)")


def _remote_reranked_search(ctx: Context) -> None:
    """A remote reranker (a stand-in text-embeddings-inference) registered by the schema's
    owner, then searches reranked by it: the application role's, through what POST /search
    runs on its pooled session (it may not register or change a reranker itself), and the
    superuser's on the command line, by the table's setting and by name."""
    breakers.reset()
    with RerankServer(kind="tei") as server:
        with ctx.roles.connect() as su:
            su.execute(
                "SELECT embeddings.register_reranker('remote-rr', 'tei', %s)", (server.base_url,)
            )
        if ctx.role == APPLICATION:
            for statement in (
                "SELECT embeddings.register_reranker('mine', 'tei', 'http://127.0.0.1:9')",
                "UPDATE embeddings.rerankers SET endpoint = 'https://rerank.evil.example'",
                "SELECT embeddings.unregister_reranker('remote-rr')",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    ctx.sql(statement)
            searches = SearchConnections(ctx.dsn, max_size=1)
            rerankers = LoadedRerankers(ModelLocation.of(ctx.model_path), threads=1)
            try:
                for table in ("docs_side", "docs_chunked", "docs_document"):
                    ask = {"table": table, "query": "document", "k": 2, "rerank": "remote-rr"}
                    with searches.connection() as conn:
                        search.run(
                            conn,
                            ctx.embedders.get,
                            SearchRequest.parse(ask),
                            load_reranker=rerankers.get,
                        )
                with searches.connection() as conn:  # what the next search's session holds
                    settings = dict(conn.execute(harness.SESSION_STATE_NOW).fetchall())
                    assert settings == harness.session_state_of_a_fresh(ctx.dsn), settings
            finally:
                rerankers.close()
                searches.close()
        else:
            ctx.sql("SELECT embeddings.set_rerank('docs_side', 'remote-rr', depth => 5)")
            for argv in (
                ("search", "docs_side", "document", "-k", "2"),
                ("search", "docs_chunked", "document", "-k", "2", "--rerank", "remote-rr"),
            ):
                result = ctx.cli(*argv)
                assert result.returncode == 0, result.stderr
            ctx.sql(
                "SELECT embeddings.set_rerank('docs_side', NULL)",
                "SELECT embeddings.unregister_reranker('remote-rr')",
            )
        assert server.requests and server.violations == []
    breakers.reset()


def _hostile_documents(ctx: Context) -> None:
    """The owner stores files made to hurt whoever parses them: a corrupt PDF, an encrypted
    one, a zip bomb posing as a DOCX. The worker parses them in its load stage (never in the
    owner's transaction), fails each alone, for good, and goes on serving everyone."""
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b" " * (65 * 2**20))
    files = [
        (101, b"%PDF-1.4\n1 0 obj << /Length 999999 >> stream\nnot a pdf"),
        (102, encrypted(pdf_bytes([["locked"]]), "secret")),
        (103, bomb.getvalue()),
    ]
    with ctx.roles.connect(ctx.roles.owner) as owner, owner.cursor() as cur:
        cur.executemany("INSERT INTO docs_document VALUES (%s, %s)", files)
    ctx.run_once(database_url=ctx.roles.worker_dsn, batch_size=3)
    with ctx.roles.connect() as su:
        failed = su.execute(
            "SELECT row_key::int, last_error FROM embeddings.failures f"
            " JOIN embeddings.targets t ON t.id = f.target_id"
            " WHERE t.source = 'docs_document'::regclass ORDER BY 1"
        ).fetchall()
    assert [(k, e.split(":")[0]) for k, e in failed] == [
        (101, "pdf document"),
        (102, "pdf document"),
        (103, "docx document"),
    ], failed


def _push(ctx: Context) -> None:
    """Push mode: embeddings.dispatch_batches() (the schema's owner) leases the jobs of the
    owner's new rows, in requests of at most push.MAX_ROWS rows, and the work of POST
    /functions/v1/embed (worker/http/push.py) embeds them as the worker role, every batch on
    one connection the owner's code runs in."""
    with ctx.roles.connect(ctx.roles.owner) as owner:
        owner.execute(  # (literals: the owner's session has overloads of || and + planted)
            "INSERT INTO docs_row VALUES (1001, 'p1'), (1002, 'p2'), (1003, 'p3'), (1004, 'p4'),"
            " (1005, 'p5')"
        )
    with ctx.roles.connect() as su:
        bodies = [r[0] for r in su.execute("SELECT * FROM embeddings.dispatch_batches(2, 10)")]
    settings = case_settings(ctx.roles.worker_dsn, MINILM, ctx.model_path)
    worker = in_process_worker(settings, ctx.embedders, batch_size=2)
    pushed = push.Push(
        dsn=worker.dsn,
        settings=worker.settings,
        lanes=worker.lanes,
        registry=worker.registry,
        embedders=worker.embedders,
    )
    for body in bodies:
        result = push.process(pushed, body)
        assert result.failed == [], result.failed
    with ctx.roles.connect() as su:
        assert su.execute("SELECT count(embedding) FROM docs_row WHERE id > 1000").fetchone() == (
            5,
        )


def _dispatch(ctx: Context) -> None:
    """Push mode's dispatch() (the schema's owner) posts the owner's new rows' jobs through pg_net
    (tests/support/pg_net.py: a stand-in where the server has none): first to a port nothing
    listens on, then to a server that takes them (200). The next run gives the refused jobs
    their read back (settle_dispatched(), in pgmq's tables only); the taken ones keep theirs."""
    with ctx.roles.connect(ctx.roles.owner) as owner:
        owner.execute("INSERT INTO docs_row VALUES (1011, 'd1'), (1012, 'd2')")
    admin_dsn = make_conninfo(ctx.roles.dsn, dbname="postgres")
    with ctx.roles.connect() as su, pg_net.net_for(su, admin_dsn) as net:
        refused = fetch_value(
            su, "SELECT embeddings.dispatch(%s, timeout_seconds => 1)", (net.url(None),)
        )
        assert refused > 0
        net.answer(su)
        assert fetch_value(
            su, "SELECT embeddings.dispatch(%s, timeout_seconds => 1)", (net.url(200),)
        )
        net.answer(su)
        fetch_value(su, "SELECT embeddings_internal.settle_dispatched()")
        given_back = su.execute(
            "SELECT status_code, given_back > 0 FROM embeddings.dispatched ORDER BY request_id"
        ).fetchall()
        assert given_back == [(None, True)] * refused, given_back


def _uninstall(ctx: Context) -> None:
    with ctx.roles.connect() as su:
        schema.uninstall(su)
        su.execute("SELECT now(), clock_timestamp()")


# Each operation: the roles it runs as, and how. The worker's own run follows every one of them.
OPERATIONS: dict[str, tuple[tuple[str, ...], Callable[[Context], None]]] = {
    "the worker, every store kind": ((WORKER, SUPERUSER), _worker),
    "a model change and its swap": ((SUPERUSER,), _model_change),
    "a remote model against a stand-in": ((SUPERUSER,), _remote_model),
    "sweep()": ((SUPERUSER,), _sweep_beside_dead_letters),
    "verify (sweep(verify => true))": (
        (SUPERUSER,),
        _forget_jobs_then("SELECT embeddings.verify(1000)"),
    ),
    "backfill steps": (
        (SUPERUSER,),
        _forget_jobs_then(
            "SELECT embeddings.watch('docs_row', 'body', model => '"
            + MINILM
            + "', backfill => true);"
            " SELECT embeddings.backfill_step_keys()"
        ),
    ),
    "watch again": (
        (SUPERUSER,),
        lambda ctx: ctx.sql(
            *(
                f"SELECT embeddings.watch('{t}', {a}, model => '{MINILM}')"
                for t, a in harness.KINDS.items()
            )
        ),
    ),
    "a deferred index's names and check (deferred_index_on(), deferred_index_check())": (
        (SUPERUSER,),
        lambda ctx: ctx.sql(
            "SELECT embeddings_internal.deferred_index_on(t, t.store_table),"
            " embeddings_internal.deferred_index_check(t.id, t.store_table, ic.relname)"
            " FROM embeddings.targets t JOIN pg_index i ON i.indrelid = t.store_table"
            " JOIN pg_class ic ON ic.oid = i.indexrelid AND ic.relam = (SELECT oid FROM pg_am"
            " WHERE amname = 'hnsw') JOIN pg_class c ON c.oid = t.store_table AND c.relkind = 'r'"
        ),
    ),
    "unwatch and watch again": (
        (SUPERUSER,),
        lambda ctx: ctx.sql(
            *(
                f"SELECT embeddings.unwatch('{t}'); SELECT embeddings.watch('{t}', {a}, model => '{MINILM}')"
                for t, a in harness.KINDS.items()
                if t not in ("docs_row", "docs_fn", "docs_part", "docs_replica", "docs_domain")
            )
        ),
    ),
    "status (SQL)": (
        (SUPERUSER, WORKER),
        lambda ctx: ctx.sql(
            "SELECT * FROM embeddings.status",
            "SELECT * FROM embeddings_internal.target_status(true)",
        ),
    ),
    "search (SQL)": ((APPLICATION, SUPERUSER), _sql_search),
    "search (SQL) where PUBLIC's rights were revoked (grant_search())": (
        (APPLICATION,),
        _hardened_sql_search,
    ),
    "search (SQL), its functions made again before PUBLIC's rights were revoked (grant_search(), grant_worker())": (
        (APPLICATION,),
        _search_grants_before_revoking,
    ),
    "search (HTTP)": ((APPLICATION,), _http_search),
    "search (HTTP server)": ((APPLICATION,), _http_server_search),
    "search (CLI)": (
        (SUPERUSER,),
        lambda ctx: ctx.cli("search", "docs_chunked", "document", "-k", "2"),
    ),
    "search (CLI, as EMBED_SEARCH_DATABASE_URL's role)": ((APPLICATION,), _cli_search),
    "embed and model list (CLI), the database's default and registered models": (
        (SUPERUSER, WORKER),
        _embed_and_model_list,
    ),
    "embed, readiness and metrics (HTTP server: POST /embed, GET /healthz, /readyz, /metrics)": (
        (WORKER,),
        _http_server_embed,
    ),
    "plan": ((SUPERUSER,), _plan),
    "status": ((SUPERUSER, WORKER), _status),
    "doctor": ((SUPERUSER,), lambda ctx: ctx.cli("doctor")),
    "failures --retry (a table's, an id's, all)": ((SUPERUSER, WORKER), _failures_retry),
    "sweep (CLI)": ((SUPERUSER,), lambda ctx: ctx.cli("sweep", "--verify")),
    "an unknown model refused": ((SUPERUSER,), _unknown_model),
    "models registered, refused and unregistered": ((SUPERUSER,), _models_registered),
    "refusals that name what to pass (quoted columns, a table named but for case or unquoted)": (
        (SUPERUSER,),
        _named_fixes,
    ),
    "held jobs' fix (embeddings.stopped)": ((SUPERUSER, WORKER), _held_fix),
    "a reranked search (set_rerank, search --rerank)": ((SUPERUSER,), _reranked_search),
    "a remotely reranked search (register_reranker, POST /search, search --rerank)": (
        (APPLICATION, SUPERUSER),
        _remote_reranked_search,
    ),
    "hostile documents (corrupt, encrypted, a zip bomb)": ((SUPERUSER,), _hostile_documents),
    "a key retyped, its side table converted": (
        (SUPERUSER,),
        lambda ctx: ctx.sql(  # a problem (the store cannot follow), then gone: jobs dropped
            "ALTER TABLE docs_side ALTER COLUMN id TYPE uuid USING md5(id::text)::uuid",
            "ALTER TABLE docs_side_embeddings ALTER COLUMN id TYPE uuid USING md5(id::text)::uuid",
        ),
    ),
    "push mode (dispatch_batches, POST /functions/v1/embed's work)": ((SUPERUSER,), _push),
    "push mode's dispatch() (pg_net, or a stand-in where it is absent)": ((SUPERUSER,), _dispatch),
    "migrate": ((SUPERUSER,), lambda ctx: ctx.cli("migrate")),
    "deploy (CLI)": ((SUPERUSER,), lambda ctx: ctx.cli("deploy", "systemd")),
    "uninstall": ((SUPERUSER,), _uninstall),
}

CASES = [(op, role) for op, (roles, _) in OPERATIONS.items() for role in roles]

# The operation that runs each HTTP route and each command of the command line (a real `run`
# serves HTTP in "search (HTTP server)"; the in-process worker is the pipeline `run` runs).
ENTRY_POINTS = {
    "GET /healthz": "embed, readiness and metrics (HTTP server: POST /embed, GET /healthz, /readyz, /metrics)",
    "GET /readyz": "embed, readiness and metrics (HTTP server: POST /embed, GET /healthz, /readyz, /metrics)",
    "GET /metrics": "embed, readiness and metrics (HTTP server: POST /embed, GET /healthz, /readyz, /metrics)",
    "POST /embed": "embed, readiness and metrics (HTTP server: POST /embed, GET /healthz, /readyz, /metrics)",
    "POST /functions/v1/embed": "push mode (dispatch_batches, POST /functions/v1/embed's work)",
    "POST /search": "search (HTTP server)",
    "migrate": "migrate",
    "run": "search (HTTP server)",
    "status": "status",
    "embed": "embed and model list (CLI), the database's default and registered models",
    "search": "search (CLI)",
    "failures": "failures --retry (a table's, an id's, all)",
    "sweep": "sweep (CLI)",
    "doctor": "doctor",
    "plan": "plan",
    "model": "embed and model list (CLI), the database's default and registered models",
    "deploy": "deploy (CLI)",
}


@pytest.fixture(scope="module")
def built_world(
    cluster: Cluster,
    template_db: str,
    embedders: LoadedModels,
    model_path: str,
    tiny_model_paths: str,
) -> Iterator[tuple[str, harness.World]]:
    """The world built once for the module, every row embedded once, and its database's name:
    building it takes 13-16 s on a 2-core machine, and each case gets a copy (`world`)."""
    require_minilm()
    name = cluster.create_database(template=template_db, prefix="world")
    dsn = cluster.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        roles = create_roles(conn, dsn)
        register_tiny_models(conn)
    try:  # (a build that fails leaves no roles behind on a server of TEST_DATABASE_URL either)
        built = harness.build(roles)
        worker = in_process_worker(
            case_settings(dsn, MINILM, model_path),
            embedders,
            once=True,
            database_url=roles.worker_dsn,
            batch_size=3,
        )
        assert worker.run() == 0
        harness.verdict(roles)
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:  # (a session left in
            conn.execute(  # the template would stop every copy: CREATE DATABASE waits for it)
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        yield name, built
    finally:
        cluster.drop_database(name)  # (each case's copy is gone by now: nothing else of theirs)
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
            drop_roles(conn, roles)


@pytest.fixture
def world(
    cluster: Cluster, built_world: tuple[str, harness.World], minilm: str
) -> Iterator[harness.World]:
    """A copy of the module's world for one case. CREATE DATABASE ... TEMPLATE copies what is in
    the database, not the grants on the database itself: the owner's CREATE on it again."""
    template, built = built_world
    name = cluster.create_database(template=template, prefix="world")
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
        conn.execute(f"GRANT CREATE ON DATABASE {name} TO {built.roles.owner}")
    yield dataclasses.replace(built, roles=dataclasses.replace(built.roles, dsn=cluster.dsn(name)))
    cluster.drop_database(name)


@pytest.mark.parametrize(("operation", "role"), CASES, ids=[f"{o} as {r}" for o, r in CASES])
def test_no_operation_runs_the_tenants_code_as_anyone_else(
    world: harness.World,
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
    model_path: str,
    operation: str,
    role: str,
) -> None:
    roles = world.roles
    ctx = Context(world, role, run_once, embedders, model_path)
    OPERATIONS[operation][1](ctx)
    harness.verdict(roles, *([roles.writer] if role == APPLICATION else []))
    if operation == "uninstall":
        return
    # The worker still serves the other tenant, whatever the owner's code left behind.
    with roles.connect(roles.tenant) as tenant:
        tenant.execute("INSERT INTO secrets VALUES (2, 'added after the operation')")
    run_once(database_url=roles.worker_dsn, batch_size=3)
    harness.verdict(roles)
    with roles.connect() as su:
        assert su.execute("SELECT count(embedding) FROM secrets").fetchone() == (2,)


def test_every_hook_is_planted_and_fires(
    roles: Roles, run_once: Callable[..., Worker], tiny_models: tuple[str, str], model_path: str
) -> None:
    """The harness is only as good as its hooks: each must run somewhere, as the owner (the row
    security policy as the application role: Postgres runs a policy for a table's readers, not
    for its owner)."""
    harness.build(roles)
    run_once(database_url=roles.worker_dsn, batch_size=3)
    fired = harness.planted(harness.verdict(roles))
    for statement in (  # the owner's own statements run the rest
        "SELECT docs_row::text FROM docs_row LIMIT 1",
        "SELECT * FROM docs_view",
        "SET search_path = evil, pg_catalog; SELECT now()",
        # The plantings in `public` win wherever a session's path reaches them (the owner's):
        # an exact type over pg_catalog's anyarray, and over its double precision `secs`.
        "SELECT pg_catalog.count(*) FROM unnest('{a}'::text[]), make_interval(secs => 1::smallint)",
        "INSERT INTO docs_domain VALUES (99, 'x')",
    ):
        with roles.connect(roles.owner) as owner:  # (each hook leaves its session read-only)
            owner.execute(statement)
    fired |= harness.planted(harness.verdict(roles))
    with roles.connect(roles.writer) as application:  # a policy runs for readers but its owner
        application.execute("SELECT count(*) FROM docs_fn")
    fired |= harness.planted(harness.verdict(roles, roles.writer))
    assert set(harness.HOOKS) <= fired, set(harness.HOOKS) - fired
    with roles.connect() as su:  # every function and operator of the list, overloaded
        planted = su.execute(
            "SELECT n.nspname, pg_catalog.count(DISTINCT p.proname) FILTER (WHERE p.proname OPERATOR(pg_catalog.!~) '^captured_'),"
            " pg_catalog.count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname IN (%s, %s) GROUP BY 1",
            (roles.worker, "public"),
        ).fetchall()
    assert len(planted) == 2 and all(names >= 50 and total >= 500 for _, names, total in planted)


def test_every_route_and_command_is_a_harness_operation() -> None:
    """POST /embed, GET /readyz and /metrics, `embed` and `model list` (which read the
    database's default and registered models, checking its release and the pooler first) ran in
    no operation; each route the server serves and each command the parser knows is run by one."""
    source = Path(http_server.__file__).read_text()
    routes = {
        f"{method} {path}"
        for table, method in (("get_routes", "GET"), ("post_routes", "POST"))
        for path in re.findall(
            r'"(/[^"]*)": Route\(', source.split(f"self.{table} = {{", 1)[1].split("}", 1)[0]
        )
    }
    commands = {name for name, *_ in parser.COMMANDS}
    assert set(ENTRY_POINTS) == routes | commands
    assert set(ENTRY_POINTS.values()) <= set(OPERATIONS)


def test_the_documented_operations_are_the_harness_operations() -> None:
    text = (DOCS / "security.md").read_text()
    section = text.split("## What the hostile-tenant harness runs", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    documented = {}
    for line in rows[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        documented[cells[0].strip("`")] = cells[1]
    assert documented == {op: ", ".join(r) for op, (r, _) in OPERATIONS.items()}
    assert str(len(harness.HOOKS)) in section and str(len(CASES)) in section
