"""A pooled search session serves no table's searches with a plan built while another table's
owner's code ran (worker/retrieval/search.py: a session's cached plans are kept only for the
next searches of the table its last search ranked; a search of any other drops them first).

A table owner's policy runs in the search role's pooled session whenever that table is searched,
and it may search other tables there under planner settings it chose. PL/pgSQL caches the plans
of a search's statements for the session, and a generic plan built under those settings keeps
what they decided. Two forms: with a sequential scan made to look free, the plan keeps its costs
and wins the plan cache's choice for the next searches of that table on the connection,
whosever they are; with `jit_above_cost = 0`, the plan keeps the decision to compile its
expressions with LLVM, and every later search of the table would pay the compilation (tens of
milliseconds) under the database's own settings. Here the hostile owner's policy does each to
the other tenant's indexed table; the tenant's next searches on the same pooled connection must
still use the index (counted in pg_stat_user_tables) and compile nothing (pg_stat_statements'
JIT counts): no timing."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import psycopg

from bench.search_paths import vector_literal
from tests.security.conftest import Compiled, Roles
from worker.models.loaded import LoadedModels
from worker.models.query_batch import QueryBatchers
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.search import SearchService

ROWS = 4000  # enough that the index is the cheap way under the database's settings (below)
SEARCHES_UNDER_ITS_SETTINGS = 10  # past the plan cache's five custom plans: a generic one


def _vector(rng: np.random.Generator) -> str:
    v = rng.standard_normal(384).astype(np.float32)
    return vector_literal(v / np.linalg.norm(v))


def _scans(conn: psycopg.Connection[Any], table: str) -> tuple[int, int]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = %s",
        (table,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _slanted(
    conn: psycopg.Connection[Any], roles: Roles, minilm: str, slant: dict[str, str]
) -> None:
    """The tenant's indexed table `notes` and the hostile owner's `slanted`, both watched, whose
    policy sets the session's `slant` settings and searches `notes` under them, past the plan
    cache's custom plans."""
    rng = np.random.default_rng(7)
    with roles.connect(roles.tenant) as tenant:
        tenant.execute("CREATE TABLE notes (id int PRIMARY KEY, body text, embedding halfvec(384))")
        with tenant.cursor().copy("COPY notes (id, body, embedding) FROM STDIN") as copy:
            for i in range(1, ROWS + 1):
                copy.write_row((i, f"note {i}", _vector(rng)))
        tenant.execute("CREATE INDEX ON notes USING hnsw (embedding halfvec_cosine_ops)")
        tenant.execute("ANALYZE notes")
        tenant.execute(f"GRANT SELECT ON notes TO {roles.writer}")
    settings = "".join(
        f"PERFORM set_config('{name}', '{value}', false);\n" for name, value in slant.items()
    )
    with roles.connect(roles.owner) as owner:
        owner.execute(
            "CREATE TABLE slanted (id int PRIMARY KEY, body text, embedding halfvec(384))"
        )
        owner.execute("INSERT INTO slanted VALUES (1, 'slanted', %s)", (_vector(rng),))
        owner.execute(
            f"""CREATE FUNCTION public.slant() RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
                {settings}
                FOR i IN 1..{SEARCHES_UNDER_ITS_SETTINGS} LOOP
                    PERFORM * FROM embeddings.search('public.notes',
                                                     '{_vector(rng)}'::public.halfvec, 5);
                END LOOP;
                PERFORM pg_stat_force_next_flush();  -- (its scans counted before the next's)
                RETURN true;
            END $$"""
        )
        owner.execute("ALTER TABLE slanted ENABLE ROW LEVEL SECURITY")
        owner.execute("CREATE POLICY slant ON slanted FOR SELECT USING (public.slant())")
        owner.execute(f"GRANT SELECT ON slanted TO {roles.writer}")
    for table in ("notes", "slanted"):
        conn.execute(f"SELECT embeddings.watch('{table}', 'body', model => %s)", (minilm,))
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")
    # A table this small is otherwise searched exactly, which scans it whatever the plan; and
    # at the default random_page_cost (4, a spinning disk's) its index is dearer than a scan.
    # 1.1 is the usual setting on SSDs.
    database = conn.info.dbname
    conn.execute(f"ALTER DATABASE {database} SET embeddings.exact_search_rows = 100")
    conn.execute(f"ALTER DATABASE {database} SET random_page_cost = 1.1")


def _service(roles: Roles, embedders: LoadedModels) -> tuple[SearchConnections, SearchService]:
    """POST /search's pool as the application role, one connection: every search after the
    first runs in the session the owner's policy ran in."""
    searches = SearchConnections(roles.dsn_of(roles.writer), max_size=1)
    return searches, SearchService(searches.connection, QueryBatchers(embedders.get))


def test_a_plan_another_tenants_policy_built_does_not_serve_the_next_searches(
    conn: psycopg.Connection[Any],
    roles: Roles,
    minilm: str,
    embedders: LoadedModels,
) -> None:
    free_scan = {
        "seq_page_cost": "0",
        "cpu_tuple_cost": "0",
        "cpu_operator_cost": "0",
        "random_page_cost": "1000",
    }
    _slanted(conn, roles, minilm, free_scan)
    # The tenant's table is searched once first, so that its next searches are of a table the
    # service knows (a table's first search reads its target on a lease of its own, and that
    # lease drops every plan).
    searches, service = _service(roles, embedders)
    try:
        assert len(service.search(SearchRequest("notes", "a first question", 5))) == 5
        service.search(SearchRequest("slanted", "a question", 5))
        seq_before, index_before = _scans(conn, "notes")
        assert seq_before + index_before >= SEARCHES_UNDER_ITS_SETTINGS  # the policy's searches
        for question in ("a question", "another question", "a third one"):
            assert len(service.search(SearchRequest("notes", question, 5))) == 5
    finally:
        searches.close()  # (its session's scans are counted as it ends)
    deadline = time.monotonic() + 10
    while True:
        seq_after, index_after = _scans(conn, "notes")
        if seq_after + index_after >= seq_before + index_before + 3:
            break
        assert time.monotonic() < deadline, "the searches' scans were never counted"
        time.sleep(0.05)
    assert (seq_after - seq_before, index_after - index_before) == (0, 3)


def test_a_plan_compiled_under_another_tenants_jit_settings_does_not_serve_the_next_searches(
    conn: psycopg.Connection[Any],
    roles: Roles,
    minilm: str,
    embedders: LoadedModels,
    compiled: Compiled,
) -> None:
    _slanted(conn, roles, minilm, {"jit": "on", "jit_above_cost": "0"})
    searches, service = _service(roles, embedders)
    try:
        assert len(service.search(SearchRequest("notes", "a first question", 5))) == 5
        compiled.reset()
        service.search(SearchRequest("slanted", "a question", 5))
        assert compiled.by()[1] > 0, "the policy's searches were not compiled: nothing shown"
        compiled.reset()
        for question in ("a question", "another question", "a third one"):
            assert len(service.search(SearchRequest("notes", question, 5))) == 5
        searched = compiled.by(roles.writer)[0]
        _, functions = compiled.by()  # (as anyone: the functions' owners too)
    finally:
        searches.close()
    assert searched >= 3  # the tenant's searches were counted ...
    assert functions == 0  # ... and none of their statements was compiled
