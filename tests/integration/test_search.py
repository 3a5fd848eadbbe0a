"""Search returns k results whenever k rows match (near-duplicate chunks, deleted rows not yet
vacuumed, filters), in distance order, keys typed as in the table, and only what the caller's
own rights and row-level security let it see (sql/58_search.sql, worker/retrieval/).

Vectors are written straight into the tables (no model runs): the query is a fixed vector, and
the expected answer is computed here exactly with numpy."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from psycopg import sql

from tests.support.process import run_cli
from worker import db, exceptions
from worker.cli import plan
from worker.pipeline import targets as targets_mod
from worker.retrieval import errors, rankings
from worker.retrieval.targets import find_target

Conn = psycopg.Connection[Any]
DIMS = 384
MODEL = "all-MiniLM-L6-v2"
Vec = npt.NDArray[np.float32]


def unit(v: npt.NDArray[Any]) -> Vec:
    normed: Vec = (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)
    return normed


def text(v: Vec) -> str:
    return "[" + ",".join(f"{x:.5f}" for x in v.tolist()) + "]"


def toward(query: Vec, rng: np.random.Generator, distance: float, n: int = 1) -> Vec:
    """n unit vectors at about `distance` (cosine) from `query`."""
    noise = unit(rng.standard_normal((n, DIMS)))
    noise -= np.outer(noise @ query, query)
    noise = unit(noise)
    cos = 1 - distance
    return unit(cos * query + np.sqrt(1 - cos * cos) * noise)


def half(v: Vec) -> Vec:
    """`v` as stored: written as text(), read into a halfvec."""
    return np.round(v, 5).astype(np.float16).astype(np.float32)


def exact_documents(vectors: dict[int, Vec], query: Vec, k: int) -> list[int]:
    """The k documents with the nearest chunks (exact, at halfvec precision)."""
    best = {doc: float(np.min(1 - half(unit(v)) @ query)) for doc, v in vectors.items()}
    return sorted(best, key=best.__getitem__)[:k]


@pytest.fixture
def query() -> Vec:
    return unit(np.random.default_rng(1).standard_normal(DIMS))


def load_chunks(conn: Conn, vectors: dict[int, Vec]) -> None:
    """The chunks, then the index built over them at once (quicker than row by row)."""
    (index,) = conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = indexrelid"
        " JOIN pg_am am ON am.oid = c.relam WHERE indrelid = 'docs_chunks'::regclass"
        " AND am.amname = 'hnsw'"
    ).fetchone() or (None,)
    definition = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (index,)).fetchone()
    conn.execute(f"DROP INDEX {index}")
    statement = "COPY docs_chunks (id, seq, chunk, chunk_hash, embedding) FROM STDIN"
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for doc, chunk_vectors in vectors.items():
            for seq, v in enumerate(chunk_vectors):
                copy.write_row((doc, seq, f"doc {doc} chunk {seq}", f"h{doc}-{seq}", text(v)))
    assert definition is not None
    conn.execute(definition[0])
    conn.execute("ANALYZE docs_chunks")


@pytest.fixture
def chunked(conn: Conn, query: Vec) -> dict[int, Vec]:
    """Two long, repetitive documents (3,500 near-identical chunks each, all very near the
    query) and ten short ones, farther and farther away."""
    rng = np.random.default_rng(2)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, tenant int NOT NULL, body text)")
    conn.execute("INSERT INTO docs SELECT i, i % 2, 'doc ' || i FROM generate_series(1, 12) i")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 64)", (MODEL,)
    )
    vectors = {1: toward(query, rng, 0.02, 3500), 2: toward(query, rng, 0.03, 3500)}
    for doc in range(3, 13):
        vectors[doc] = toward(query, rng, 0.1 + 0.05 * doc, 2)
    load_chunks(conn, vectors)
    return vectors


def searched(conn: Conn, table: str, query: Vec, k: int, **kw: Any) -> list[dict[str, Any]]:
    target = find_target(conn, table)
    return rankings.run(conn, rankings.by_vector_ranking(target, query, k, **kw))


@pytest.mark.parametrize("exact_below", [0, 1_000_000])
def test_k_documents_from_near_duplicate_chunks(
    conn: Conn, chunked: dict[int, Vec], query: Vec, exact_below: int
) -> None:
    conn.execute(f"SET embeddings.exact_search_rows = {exact_below}")  # index path, exact path
    found = searched(conn, "docs", query, 3)
    assert [r["key"] for r in found] == exact_documents(chunked, query, 3) == [1, 2, 3]
    distances = [r["distance"] for r in found]
    assert distances == sorted(distances)
    assert found[2]["content"] == f"doc 3 chunk {found[2]['seq']}"
    assert found[0]["similarity"] == pytest.approx(1 - found[0]["distance"])
    # The settings the search turned on are put back for the rest of the transaction.
    assert conn.execute("SHOW hnsw.iterative_scan").fetchone() == ("off",)
    assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("40",)


def test_deleted_documents_not_yet_vacuumed_leave_k_results(
    conn: Conn, chunked: dict[int, Vec], query: Vec
) -> None:
    conn.execute("SET embeddings.exact_search_rows = 0")
    conn.execute("DELETE FROM docs WHERE id IN (1, 2)")  # 7,000 dead chunks in the index
    found = searched(conn, "docs", query, 3)
    assert [r["key"] for r in found] == [3, 4, 5]


def test_filter_keeps_k_results_and_rls_hides_rows(
    conn: Conn, chunked: dict[int, Vec], query: Vec
) -> None:
    conn.execute("SET embeddings.exact_search_rows = 0")
    # Tenant 1 holds the odd documents: its best are 1 (near duplicates), then 3, 5.
    found = searched(conn, "docs", query, 3, filter={"tenant": 1})
    assert [r["key"] for r in found] == [1, 3, 5]
    found = searched(conn, "docs", query, 3, filter={"tenant": 0, "id": {"gte": 6}})
    assert [r["key"] for r in found] == [6, 8, 10]
    found = searched(conn, "docs", query, 4, filter={"id": [12, 4, 99]})
    assert [r["key"] for r in found] == [4, 12]

    # An application role under row-level security: tenant 0's documents only.
    conn.execute("CREATE ROLE app_reader")
    conn.execute("GRANT SELECT ON docs, docs_chunks TO app_reader")
    conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    conn.execute(
        "CREATE POLICY tenant ON docs FOR SELECT TO app_reader"
        " USING (tenant = current_setting('app.tenant')::int)"
    )
    conn.execute("SET app.tenant = '0'")
    conn.execute("SET ROLE app_reader")
    found = searched(conn, "docs", query, 3)
    assert [r["key"] for r in found] == [2, 4, 6]
    conn.execute("RESET ROLE")

    # A role without SELECT is refused, not shown the owner's rows.
    conn.execute("CREATE ROLE outsider")
    conn.execute("SET ROLE outsider")
    with pytest.raises(errors.SearchDenied, match="permission denied"):
        searched(conn, "docs", query, 3)
    conn.execute("RESET ROLE")


def test_bad_filters_are_refused(conn: Conn, chunked: dict[int, Vec], query: Vec) -> None:
    for bad, message in [
        ({"nope": 1}, "has no column"),
        ({"tenant": {"like": 1}}, "comparisons are"),
        # (the key and its column's type named: Postgres' error alone said neither)
        (
            {"tenant": "x"},
            "search filter: tenant is a column of type integer, which cannot read this value:"
            ' invalid input syntax for type integer: "x"',
        ),
        ({"tenant": "1; DROP TABLE docs"}, "tenant is a column of type integer"),
        ({"id": [1, "two"]}, 'id is a column of type integer.*"two"'),
        ({"id": {"gte": 1, "lt": "9x"}}, 'id is a column of type integer.*"9x"'),
        ({"id": {"in": [1, 2.5]}}, 'id is a column of type integer.*"2.5"'),
        ({"id": 99999999999}, "id is a column of type integer.*out of range"),
    ]:
        with pytest.raises(errors.InvalidSearch, match=message):
            searched(conn, "docs", query, 3, filter=bad)
    assert conn.execute("SELECT count(*) FROM docs").fetchone() == (12,)


@pytest.mark.parametrize(
    ("key_sql", "keys", "expected"),
    [
        ("id int PRIMARY KEY", ["7"], 7),
        ("id bigint PRIMARY KEY", ["9007199254740993"], 9007199254740993),
        ("id text PRIMARY KEY", ["'7'"], "7"),
        (
            "id uuid PRIMARY KEY",
            ["'3f1c1d3e-0000-4000-8000-000000000001'"],
            "3f1c1d3e-0000-4000-8000-000000000001",
        ),
        ("a int, b text, PRIMARY KEY (a, b)", ["7", "'x'"], [7, "x"]),
        # Numerics exact, as strings (docs/http.md): not 1e+20 and 1.5, as psycopg's JSON
        # loader made them.
        (
            "a date, b numeric, PRIMARY KEY (a, b)",
            ["'2024-01-02'", "100000000000000000000.25"],
            ["2024-01-02", "100000000000000000000.25"],
        ),
        ("id numeric PRIMARY KEY", ["1.50"], "1.50"),
        ("id numeric PRIMARY KEY", ["2"], "2"),
        ("id double precision PRIMARY KEY", ["0.1"], "0.1"),
    ],
)
def test_keys_keep_their_type_in_json(
    conn: Conn, query: Vec, key_sql: str, keys: list[str], expected: Any
) -> None:
    conn.execute(f"CREATE TABLE items ({key_sql}, body text)")
    columns = "a, b" if len(keys) == 2 else "id"
    conn.execute(f"INSERT INTO items ({columns}, body) VALUES ({', '.join(keys)}, 'hello')")
    conn.execute("SELECT embeddings.watch('items', 'body', model => %s)", (MODEL,))
    conn.execute("UPDATE items SET embedding = %s", (text(query),))
    (found,) = searched(conn, "items", query, 5)
    assert found["key"] == expected
    assert json.loads(json.dumps(found))["key"] == expected
    assert found["content"] == "hello" and found["seq"] is None
    assert found["distance"] == pytest.approx(0, abs=1e-3)


@pytest.mark.parametrize("chunks", [False, True], ids=["rows", "chunks"])
def test_exact_ties_at_the_kth_distance_go_by_key(conn: Conn, query: Vec, chunks: bool) -> None:
    """Rows at one distance (duplicate texts) straddling the k-th: the exact path keeps the
    first by key and answers in key order, whatever order they were written in; a chunked
    document once, with its best chunk. (It makes the JSON keys of the rows it keeps only,
    after sorting on the key columns themselves: sql/58_search.sql, search_code().)"""
    rng = np.random.default_rng(4)
    conn.execute("CREATE TABLE items (region text, n int, body text, PRIMARY KEY (region, n))")
    written = [(region, n) for region in ("b", "a", "c") for n in (3, 1, 2)]
    conn.execute(
        "INSERT INTO items SELECT * FROM unnest(%s::text[], %s::int[]) AS k(region, n),"
        " LATERAL (SELECT 'item ' || region || n) b",
        ([r for r, _ in written], [n for _, n in written]),
    )
    conn.execute(
        f"SELECT embeddings.watch('items', 'body', model => %s{', chunk_tokens => 64' if chunks else ''})",
        (MODEL,),
    )
    if chunks:  # every document's chunk n % 2 is the query itself, the other one farther
        statement = "COPY items_chunks (region, n, seq, chunk, chunk_hash, embedding) FROM STDIN"
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for region, n in written:
                for seq in (0, 1):
                    v = query if seq == n % 2 else toward(query, rng, 0.1)[0]
                    copy.write_row((region, n, seq, f"{region}{n} chunk {seq}", f"h{seq}", text(v)))
    else:
        conn.execute("UPDATE items SET embedding = %s", (text(query),))
    conn.execute("SET embeddings.exact_search_rows = 1000000")
    found = searched(conn, "items", query, 4)
    assert [r["key"] for r in found] == [["a", 1], ["a", 2], ["a", 3], ["b", 1]]
    assert len({r["distance"] for r in found}) == 1
    if chunks:
        assert [r["seq"] for r in found] == [1, 0, 1, 1]
        assert found[1]["content"] == "a2 chunk 0"


def test_plain_table_k_rows_past_dead_duplicates_and_filters(conn: Conn, query: Vec) -> None:
    rng = np.random.default_rng(3)
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, tenant int, body text)")
    conn.execute("INSERT INTO notes SELECT i, i % 50, 'note ' || i FROM generate_series(1, 3500) i")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (MODEL,))
    near = toward(query, rng, 0.02, 3000)  # ids 1..3000: near duplicates
    # ids 3001..3500, each at its own distance (0.3 to 0.7, in no order)
    far = np.vstack([toward(query, rng, d) for d in rng.permutation(np.linspace(0.3, 0.7, 500))])
    vectors = np.vstack([near, far])
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE v (id int, e text)")
        with cur.copy("COPY v FROM STDIN") as copy:
            for i, v in enumerate(vectors, start=1):
                copy.write_row((i, text(v)))
        cur.execute("UPDATE notes SET embedding = v.e::halfvec FROM v WHERE v.id = notes.id")
    conn.execute("ANALYZE notes")
    conn.execute("SET embeddings.exact_search_rows = 0")
    conn.execute("DELETE FROM notes WHERE id <= 3000")
    found = searched(conn, "notes", query, 5)  # the index: approximate among the live rows
    assert len(found) == 5 and all(r["key"] > 3000 for r in found)
    assert [r["distance"] for r in found] == sorted(r["distance"] for r in found)
    conn.execute("SET embeddings.exact_search_rows = 100000")
    found = searched(conn, "notes", query, 5)  # exact
    expected = 3000 + np.argsort(1 - half(far) @ query, kind="stable")[:5] + 1
    assert [r["key"] for r in found] == expected.tolist()
    conn.execute("SET embeddings.exact_search_rows = 0")
    # 1 row in 50 is tenant 7's: still 5 of them.
    found = searched(conn, "notes", query, 5, filter={"tenant": 7})
    assert len(found) == 5 and all(r["key"] % 50 == 7 for r in found)


def test_nothing_matches_is_an_empty_answer(
    conn: Conn, chunked: dict[int, Vec], query: Vec
) -> None:
    assert searched(conn, "docs", query, 3, filter={"tenant": 5}) == []


def test_search_function_in_sql(conn: Conn, chunked: dict[int, Vec], query: Vec) -> None:
    rows = conn.execute(
        "SELECT key, seq, content FROM embeddings.search('docs', %s::halfvec, 2)", (text(query),)
    ).fetchall()
    assert [r[0] for r in rows] == [1, 2]
    targets = targets_mod.load(conn)
    assert len(targets) == 1
    with pytest.raises(psycopg.Error, match="not watched"):
        conn.execute(
            sql.SQL("SELECT * FROM embeddings.search('pg_class', %s::halfvec, 2)"), (text(query),)
        )


def test_a_search_without_a_query_vector_is_an_error(
    conn: Conn, chunked: dict[int, Vec], query: Vec
) -> None:
    """An application whose question's embedding failed passes NULL: it gets an error, not
    k rows in no order with a NULL distance."""
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="query must not be NULL"):
        conn.execute("SELECT * FROM embeddings.search('docs', NULL, 5)")


def test_search_follows_a_renamed_column_in_the_same_session(conn: Conn, query: Vec) -> None:
    """search()'s statements are made once per target (sql/58_search.sql), and PL/pgSQL keeps
    their plans for the session: a rename of the content or key column remakes them."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO items VALUES (1, 'hello')")
    conn.execute("SELECT embeddings.watch('items', 'body', model => %s)", (MODEL,))
    conn.execute("UPDATE items SET embedding = %s", (text(query),))
    statement = "SELECT key, content FROM embeddings.search('items', %s::halfvec, 1, %s::jsonb)"
    for filter in (None, '{"id": 1}'):
        assert conn.execute(statement, (text(query), filter)).fetchall() == [(1, "hello")]
    conn.execute("ALTER TABLE items RENAME COLUMN body TO text_body")
    conn.execute("ALTER TABLE items RENAME COLUMN id TO item_id")
    conn.execute("UPDATE items SET text_body = 'hello again'")  # clears the vector
    conn.execute("UPDATE items SET embedding = %s", (text(query),))
    for filter in (None, '{"item_id": 1}'):
        assert conn.execute(statement, (text(query), filter)).fetchall() == [(1, "hello again")]


def test_a_table_of_two_targets_is_searched_by_naming_the_column(conn: Conn, query: Vec) -> None:
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text, title text)")
    conn.execute("INSERT INTO items VALUES (1, 'a body', 'a title')")
    conn.execute("SELECT embeddings.watch('items', 'body', model => %s)", (MODEL,))
    conn.execute(
        "SELECT embeddings.watch('items', 'title', embedding_column => 'title_embedding',"
        " model => %s)",
        (MODEL,),
    )
    conn.execute("UPDATE items SET title_embedding = %s", (text(query),))
    statement = "SELECT key, content FROM embeddings.search('items', %s::halfvec, 1, NULL, %s)"
    # SQL names them too (it said "name one" without saying which there are).
    with pytest.raises(
        psycopg.errors.AmbiguousColumn,
        match=r"^public\.items has several embedding columns: name one, embedding_column =>"
        " 'embedding' or 'title_embedding'",
    ):
        conn.execute(statement, (text(query), None))
    # POST /search and `embed-worker search`: the request is incomplete, a 400 (InvalidSearch;
    # before: a ConfigError, answered 404 as a table not found), naming what to pass.
    with pytest.raises(
        errors.InvalidSearch,
        match="items has several embedding columns: pass a column, 'embedding' or"
        " 'title_embedding'",
    ):
        find_target(conn, "items")
    assert conn.execute(statement, (text(query), "title_embedding")).fetchall() == [(1, "a title")]
    assert conn.execute(statement, (text(query), "embedding")).fetchall() == []


def test_a_null_among_a_filter_s_values_matches_null(conn: Conn, query: Vec) -> None:
    """`null` is IS NULL and a list is any of its values (docs/http.md), so a list holding
    null matches NULL rows too, in a list as in "in", from SQL and from the worker alike.
    Before: `= ANY` never matched NULL, and such a filter silently left those rows out."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, lang text, body text)")
    conn.execute("INSERT INTO notes VALUES (1, 'en', 'a'), (2, 'fr', 'b'), (3, NULL, 'c')")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (MODEL,))
    conn.execute("UPDATE notes SET embedding = %s", (text(query),))
    for lang, keys in (
        (["en", None], {1, 3}),
        ({"in": ["en", None]}, {1, 3}),
        ([None], {3}),
        (["en", "fr"], {1, 2}),
        ({"in": ["fr"], "ne": "en"}, {2}),
    ):
        by_sql = conn.execute(
            "SELECT key FROM embeddings.search('notes', %s::halfvec, 5, %s::jsonb)",
            (text(query), json.dumps({"lang": lang})),
        ).fetchall()
        assert {key for (key,) in by_sql} == keys, lang
        assert {r["key"] for r in searched(conn, "notes", query, 5, filter={"lang": lang})} == keys


def test_a_filter_value_is_a_constant_to_the_planner(conn: Conn) -> None:
    """The condition of {"tenant": 7}, with the filter known, is `tenant = 7`: estimated from
    the column's statistics and compared without a JSON step per row (it was
    `tenant = (jsonb_build_array(...) ->> 0)::integer`, a STABLE function evaluated per row)."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, tenant int, body text)")
    conn.execute("SELECT embeddings.watch('items', 'body', model => %s)", (MODEL,))
    (condition,) = conn.execute(
        "SELECT embeddings_internal.search_filter_sql(t, '{\"tenant\": 7}', 1) FROM embeddings.targets t"
    ).fetchone() or (None,)
    conn.execute(f"PREPARE filtered(jsonb) AS SELECT count(*) FROM items s WHERE {condition}")
    conn.execute("SET plan_cache_mode = force_custom_plan")
    plan = "\n".join(
        r[0] for r in conn.execute("""EXPLAIN EXECUTE filtered('{"tenant": 7}')""").fetchall()
    )
    assert "Filter: (tenant = 7)" in plan, plan


def test_the_size_that_picks_the_exact_scan_is_the_table_s(conn: Conn, query: Vec) -> None:
    """search() scans exactly below embeddings.exact_search_rows, by the table's size as ANALYZE
    estimated it: a plain table's own, a chunk table's, a partitioned table's leaves'. (A plain
    table's was unknown, so search() never chose the exact scan up front.)"""
    rng = np.random.default_rng(5)
    conn.execute("CREATE TABLE plain (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('plain', 'body', model => %s)", (MODEL,))
    conn.execute(
        "CREATE TABLE parted (id int, body text, PRIMARY KEY (id)) PARTITION BY RANGE (id)"
    )
    conn.execute("CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (100)")
    conn.execute("CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM (100) TO (1000)")
    conn.execute("SELECT embeddings.watch('parted', 'body', model => %s)", (MODEL,))
    for table in ("plain", "parted"):
        with conn.cursor() as cur, cur.copy(f"COPY {table} (id, body) FROM STDIN") as copy:
            for i in range(300):
                copy.write_row((i, f"row {i}"))
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 64)", (MODEL,)
    )
    conn.execute("INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, 5) i")
    load_chunks(conn, {d: toward(query, rng, 0.3, 40) for d in range(1, 6)})
    conn.execute("ANALYZE plain")
    conn.execute("ANALYZE parted")
    estimates = {
        table: conn.execute(
            "SELECT embeddings_internal.search_rows_estimate(t) FROM embeddings.targets t"
            " WHERE t.source = %s::regclass",
            (table,),
        ).fetchone()
        for table in ("plain", "parted", "docs")
    }
    assert estimates == {"plain": (300.0,), "parted": (300.0,), "docs": (200.0,)}


def test_a_table_not_found_but_for_case_is_named_in_the_error(conn: Conn) -> None:
    """A table made with capitals (Supabase's table editor keeps them) is `"Documents"`;
    `Documents` unquoted is `documents`, which does not exist: the error names the watched
    tables the caller may read that are named so but for case, as SQL writes them."""
    conn.execute('CREATE TABLE "Documents" (id int PRIMARY KEY, body text)')
    conn.execute('CREATE SCHEMA "Team"')
    conn.execute('CREATE TABLE "Team"."Notes" (id int PRIMARY KEY, body text)')
    conn.execute('CREATE TABLE "Unwatched" (id int PRIMARY KEY, body text)')
    for table in ('"Documents"', '"Team"."Notes"'):
        conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (table, MODEL))
    for given, meant in (
        ("Documents", '"Documents"'),
        ("DOCUMENTS", '"Documents"'),
        ("team.notes", '"Team"."Notes"'),
        ("Notes", '"Team"."Notes"'),  # in a schema of its own: named with it
    ):
        with pytest.raises(exceptions.TargetError) as info:
            find_target(conn, given)
        assert str(info.value) == (
            f"no table {given!r}; did you mean {meant}? (a name not in double quotes is read "
            "in lower case)"
        )
    for nothing_alike in ("unwatched", "other.documents", "documentss"):
        with pytest.raises(exceptions.TargetError) as info:
            find_target(conn, nothing_alike)
        assert str(info.value) == f"no table {nothing_alike!r}"
    # A role that may not read the table is not told its name.
    role = f"no_reader_{conn.info.backend_pid}"
    conn.execute(f"CREATE ROLE {role}")
    try:
        conn.execute(f"SET ROLE {role}")
        with pytest.raises(exceptions.TargetError) as info:
            find_target(conn, "documents")
        assert str(info.value) == "no table 'documents'"
        conn.execute("RESET ROLE")
        conn.execute(f'GRANT SELECT ON "Documents" TO {role}')
        conn.execute(f"SET ROLE {role}")
        with pytest.raises(exceptions.TargetError, match='did you mean "Documents"'):
            find_target(conn, "documents")
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f'REVOKE ALL ON "Documents" FROM {role}')
        conn.execute(f"DROP ROLE {role}")


def test_a_name_that_needs_double_quotes_is_answered_with_them(conn: Conn) -> None:
    """`My App.Notes` is not a name Postgres can read (a space outside double quotes): the
    error says so in one line (no CONTEXT of our functions) and names the watched tables the
    caller may read that it would name quoted, whole or part by part."""
    conn.execute('CREATE SCHEMA "My App"')
    conn.execute('CREATE TABLE "My App"."Notes" (id int PRIMARY KEY, body text)')
    conn.execute('CREATE TABLE "Release Notes" (id int PRIMARY KEY, body text)')
    for table in ('"My App"."Notes"', '"Release Notes"'):
        conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (table, MODEL))
    quoting = (
        "(a name with spaces or other signs than letters, digits and _ is written in double quotes)"
    )
    for given, answer in (
        ("My App.Notes", f'invalid name syntax; did you mean "My App"."Notes"? {quoting}'),
        ("my app.notes", f'invalid name syntax; did you mean "My App"."Notes"? {quoting}'),
        ("Release Notes", f'invalid name syntax; did you mean "Release Notes"? {quoting}'),
        ("Other Notes", "invalid name syntax"),
        ("a.b.c.d", "improper relation name (too many dotted names): a.b.c.d"),
    ):
        with pytest.raises(exceptions.TargetError) as info:
            find_target(conn, given)
        assert str(info.value) == f"no table {given!r}: {answer}"


def test_a_column_the_table_is_not_watched_with_is_answered_with_those_it_is(conn: Conn) -> None:
    """A search naming an embedding column the table is not watched with was told to watch()
    a watched table; it is told the columns to name instead."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE plain (id int PRIMARY KEY, body text)")
    for column in ("vec", "Vec 2"):
        conn.execute(
            "SELECT embeddings.watch('notes', 'body', embedding_column => %s, model => %s)",
            (column, MODEL),
        )
    with pytest.raises(exceptions.TargetError) as info:
        find_target(conn, "notes", "embedding")
    assert str(info.value) == (
        "notes is not watched with embedding column 'embedding': its embedding columns are"
        " 'vec' or 'Vec 2'"
    )
    conn.execute("SELECT embeddings.unwatch('notes', 'Vec 2')")
    with pytest.raises(exceptions.TargetError, match=r"its embedding column is 'vec'$"):
        find_target(conn, "notes", '"vec"')
    with pytest.raises(exceptions.TargetError) as info:
        find_target(conn, "plain", "vec")
    assert (
        str(info.value)
        == "plain is not watched: SELECT embeddings.watch('plain', 'content_column');"
    )


def test_a_view_or_a_partition_not_watched_is_answered_with_what_to_search(conn: Conn) -> None:
    """The hint for a relation not watched was watch() for every kind, which refuses a view
    (not a table) and a partition of a watched table (its rows would be embedded twice): a
    view is told the watched tables it reads, a partition its watched parent."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MODEL,))
    conn.execute("CREATE VIEW docs_v AS SELECT id, body FROM docs")
    conn.execute("CREATE MATERIALIZED VIEW docs_m AS SELECT id, body FROM docs")
    conn.execute("CREATE VIEW numbers AS SELECT 1 AS id")
    conn.execute("CREATE TABLE parts (id int, body text, PRIMARY KEY (id)) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100)")
    conn.execute("CREATE TABLE parts_1a PARTITION OF parts FOR VALUES FROM (100) TO (200)")
    conn.execute("SELECT embeddings.watch('parts', 'body', model => %s)", (MODEL,))
    conn.execute("CREATE TABLE alone (id int, body text) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE alone_1 PARTITION OF alone FOR VALUES FROM (0) TO (100)")
    cannot = "which cannot be watched (watch() takes tables)"
    for table, answer in (
        ("docs_v", f"docs_v is a view, {cannot}: search the watched table it reads, docs"),
        (
            "docs_m",
            f"docs_m is a materialized view, {cannot}: search the watched table it reads, docs",
        ),
        ("numbers", f"numbers is a view, {cannot}: watch a table it reads, and search that"),
        ("parts_1", "parts_1 is a partition of parts, which is watched: search parts"),
        (
            "alone_1",
            "alone_1 is not watched: SELECT embeddings.watch('alone_1', 'content_column');",
        ),
    ):
        with pytest.raises(exceptions.TargetError) as info:
            find_target(conn, table)
        assert str(info.value) == answer


@pytest.mark.parametrize(
    ("table", "answer"),
    [
        ("embeddings.targets", "embeddings.targets is embed-worker's own table"),
        ("embeddings.inbox", "embeddings.inbox is embed-worker's own table"),
        ("pgmq.meta", "pgmq.meta is pgmq's own table (it holds embed-worker's queues)"),
        ("pg_catalog.pg_class", "pg_catalog.pg_class is a table of the system catalogs"),
    ],
)
def test_a_table_of_ours_or_the_catalogs_is_not_offered_a_watch(
    dsn: str, conn: Conn, table: str, answer: str
) -> None:
    """QA clinits 4: `search embeddings.targets x` said to watch our own registry table, which
    watch() refuses: our schemas' tables (pgmq's, the catalogs') are said to be what they are."""
    if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
        pytest.skip(f"no {table} in this release's schema")
    with pytest.raises(exceptions.TargetError) as info:
        find_target(conn, table)
    assert (
        str(info.value) == f"{answer}: it cannot be watched, and search has nothing to read in it"
    )
    result = run_cli("search", table, "anything", env={"DATABASE_URL": dsn})
    assert result.returncode == 2 and answer in result.stderr, result.stderr
    assert "embeddings.watch(" not in result.stderr
    with db.connect(dsn) as c, pytest.raises(exceptions.ConfigError, match="it cannot be watched"):
        plan.make(c, table, content="x", model=MODEL)
