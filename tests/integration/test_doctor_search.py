"""doctor says who POST /search runs as and whether it may read the watched tables. The worker's
role holds no right on them, so a worker whose searches have no role of their own
(EMBED_SEARCH_DATABASE_URL unset) refuses every search: doctor says so, and names the fix, before
an application meets the 403; and POST /search's service, over a pool of that role's
connections, gets what doctor says."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support.process import run_cli
from worker.models.loaded import LoadedModels
from worker.models.query_batch import QueryBatchers
from worker.retrieval.errors import SearchDenied
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.search import SearchService

Conn = psycopg.Connection[Any]


@pytest.fixture
def login_role(conn: Conn) -> Iterator[Callable[[], str]]:
    """Makes LOGIN roles (the cluster's, so named apart and dropped after the test)."""
    made: list[str] = []

    def make() -> str:
        name = f"doctor_{uuid.uuid4().hex[:10]}"
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        made.append(name)
        return name

    yield make
    for name in made:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def as_role(dsn: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=role)


def search_as(dsn: str, embedders: LoadedModels, table: str) -> list[dict[str, Any]]:
    """A search by POST /search's service over a pool of `dsn`'s role's connections."""
    searches = SearchConnections(dsn, max_size=1)
    try:
        service = SearchService(searches.connection, QueryBatchers(embedders.get))
        return service.search(SearchRequest(table, "cats napping", 2))
    finally:
        searches.close()


def test_doctor_says_who_searches_and_which_tables_it_may_not_read(
    conn: Conn, dsn: str, minilm: str, embedders: LoadedModels, login_role: Callable[[], str]
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'cats sleep all day'), (2, 'stocks fell')")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 64)", (minilm,)
    )
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes VALUES (1, 'kittens nap'), (2, 'bonds rose')")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (minilm,))
    assert run_cli("run", "--once", "--database-url", dsn).returncode == 0
    worker = login_role()
    conn.execute("SELECT embeddings.grant_worker(%s)", (worker,))
    as_worker = as_role(dsn, worker)

    # No role of their own: the worker's searches all.
    out = run_cli("doctor", "--database-url", as_worker).stdout
    assert (
        f"warn  search: POST /search runs as the worker's own role {worker}"
        " (EMBED_SEARCH_DATABASE_URL is unset), which may not read public.docs, public.docs_chunks,"
        " public.notes: it answers 403 to a search of them"
    ) in out, out
    assert (
        "fix: give POST /search a read-only role of its own: as the tables' owner, GRANT SELECT ON"
        " public.docs, public.docs_chunks, public.notes TO <reader>; then set"
        " EMBED_SEARCH_DATABASE_URL to connect as it"
    ) in out
    with pytest.raises(SearchDenied, match="permission denied for table notes"):
        search_as(as_worker, embedders, "notes")

    # A reader that may read one of the two tables: the other named, with the grant to run.
    reader = login_role()
    conn.execute(sql.SQL("GRANT SELECT ON notes TO {}").format(sql.Identifier(reader)))
    env = {"EMBED_SEARCH_DATABASE_URL": as_role(dsn, reader)}
    out = run_cli("doctor", "--database-url", as_worker, env=env).stdout
    assert (
        f"warn  search: POST /search runs as role {reader} (EMBED_SEARCH_DATABASE_URL's), which"
        " may not read public.docs, public.docs_chunks: it answers 403"
    ) in out, out
    assert (
        f"fix: as the tables' owner: GRANT SELECT ON public.docs, public.docs_chunks TO {reader};"
        in out
    )
    as_reader = as_role(dsn, reader)
    assert [r["key"] for r in search_as(as_reader, embedders, "notes")] == [1, 2]
    with pytest.raises(SearchDenied, match="permission denied for table docs"):
        search_as(as_reader, embedders, "docs")

    # The grant the fix names, run: every watched table may be searched.
    conn.execute(sql.SQL("GRANT SELECT ON docs, docs_chunks TO {}").format(sql.Identifier(reader)))
    out = run_cli("doctor", "--database-url", as_worker, env=env).stdout
    assert (
        f"ok    search: POST /search runs as role {reader} (EMBED_SEARCH_DATABASE_URL's), which"
        " may read every watched table"
    ) in out, out
    assert [r["key"] for r in search_as(as_reader, embedders, "docs")] == [1, 2]


def test_doctor_fails_a_search_role_that_cannot_connect(conn: Conn, dsn: str) -> None:
    env = {"EMBED_SEARCH_DATABASE_URL": as_role(dsn, f"nobody_{uuid.uuid4().hex[:8]}")}
    result = run_cli("doctor", "--database-url", dsn, env=env)

    assert result.returncode == 1
    assert "FAIL  search: cannot connect as EMBED_SEARCH_DATABASE_URL's role: " in result.stdout
    assert (
        "fix: check EMBED_SEARCH_DATABASE_URL: POST /search answers 503 until it connects"
        in result.stdout
    )


def test_doctor_warns_of_a_search_role_in_another_database(
    conn: Conn, dsn: str, empty_dsn: str
) -> None:
    env = {"EMBED_SEARCH_DATABASE_URL": empty_dsn}
    out = run_cli("doctor", "--database-url", dsn, env=env).stdout

    other = psycopg.conninfo.conninfo_to_dict(empty_dsn)["dbname"]
    mine = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    assert (
        f"warn  search: EMBED_SEARCH_DATABASE_URL connects to database {other!r}, the worker's"
        f" DATABASE_URL to {mine!r}: POST /search looks for the tables there"
    ) in out, out


def test_doctor_fails_a_full_text_target_whose_store_lacks_its_column(
    conn: Conn, dsn: str, minilm: str
) -> None:
    """A target with full-text search whose store has no tsvector column (0.3.0 left one so
    after `chunk_table =>` moved it) fails every hybrid search: doctor says so, with the fix,
    and the fix works."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 64,"
        " fts => 'english')",
        (minilm,),
    )
    assert "full-text search" not in run_cli("doctor", "--database-url", dsn).stdout
    conn.execute("SET embeddings.following = 'on'")  # as our DDL: not followed
    conn.execute("ALTER TABLE docs_chunks DROP COLUMN fts")
    conn.execute("RESET embeddings.following")
    result = run_cli("doctor", "--database-url", dsn)
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if "full-text search:" in x)
    assert line.split()[0] == "FAIL"
    assert (
        "public.docs's target has full-text search (english), but its store public.docs_chunks"
        " has no column fts: its hybrid and BM25 searches fail" in line
    )
    fix = "SELECT embeddings.enable_fts('public.docs', 'english', 'embedding');"
    assert fix in result.stdout
    conn.execute(fix)
    assert "full-text search" not in run_cli("doctor", "--database-url", dsn).stdout
