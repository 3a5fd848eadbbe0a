"""embeddings.watch() and unwatch(): what they create, accept and refuse."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.fetch import fetch_value
from tests.support.jobs import messages, queued_keys

Conn = psycopg.Connection[Any]


def column_type(conn: Conn, table: str, column: str) -> str | None:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped",
        (table, column),
    ).fetchone()
    return None if row is None else str(row[0])


def hnsw_indexes(conn: Conn, table: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
            " WHERE i.indrelid = %s::regclass AND am.amname = 'hnsw'",
            (table,),
        )
    ]


def embedding_columns(conn: Conn) -> list[str]:
    """The columns named `embedding` in any table but the test's (ours and pgmq's, say)."""
    rows = conn.execute(
        "SELECT a.attrelid::regclass::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE a.attname = 'embedding' AND NOT a.attisdropped AND c.relkind IN ('r', 'p')"
        " AND c.relnamespace <> 'public'::regnamespace"
    ).fetchall()
    return [r[0] for r in rows]


def trigger_names(conn: Conn, table: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY 1",
            (table,),
        )
    ]


@pytest.mark.parametrize(
    ("key_sql", "values", "expected_keys"),
    [
        ("id bigint PRIMARY KEY", "(1, 'a'), (2, 'b')", [1, 2]),
        ("id integer PRIMARY KEY", "(1, 'a'), (2, 'b')", [1, 2]),
        ("id text PRIMARY KEY", "('x', 'a'), ('y''s', 'b')", ["x", "y's"]),
        (
            "id uuid PRIMARY KEY",
            "('00000000-0000-0000-0000-000000000001', 'a'), ('00000000-0000-0000-0000-000000000002', 'b')",
            ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"],
        ),
    ],
)
def test_watch_each_key_type(
    conn: Conn, key_sql: str, values: str, expected_keys: list[Any]
) -> None:
    conn.execute(f"CREATE TABLE docs ({key_sql}, body text)")
    conn.execute(f"INSERT INTO docs VALUES {values}")
    target = conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone()
    assert target is not None
    assert column_type(conn, "docs", "embedding") == "halfvec(384)"
    assert hnsw_indexes(conn, "docs") == [
        "CREATE INDEX docs_embedding_idx ON public.docs USING hnsw (embedding halfvec_cosine_ops)"
    ]
    assert sorted(queued_keys(conn, target[0])) == sorted(expected_keys)
    registered = conn.execute(
        "SELECT source::text, content_column, key_columns::text[], key_types::text[], model"
        " FROM embeddings.targets"
    ).fetchall()
    assert registered == [("docs", "body", ["id"], [key_sql.split()[1]], "gte-small")]


def test_watch_quoted_names_in_another_schema(conn: Conn) -> None:
    conn.execute('CREATE SCHEMA "My Schema"')
    conn.execute(
        'CREATE TABLE "My Schema"."Weird Table" ("Key" uuid PRIMARY KEY DEFAULT gen_random_uuid(), "Body Text" text)'
    )
    target_id = conn.execute(
        """SELECT embeddings.watch('"My Schema"."Weird Table"', 'Body Text', embedding_column => 'The Vector')"""
    ).fetchone()
    assert target_id is not None
    conn.execute("""INSERT INTO "My Schema"."Weird Table" ("Body Text") VALUES ('a'), ('b')""")
    assert len(queued_keys(conn, target_id[0])) == 2
    assert column_type(conn, '"My Schema"."Weird Table"', "The Vector") == "halfvec(384)"
    status = conn.execute(
        "SELECT target, total_rows, pending_jobs FROM embeddings.status"
    ).fetchone()
    assert status == ('"My Schema"."Weird Table"."The Vector"', 2, 2)


def test_watch_accepts_existing_vector_and_halfvec_columns(conn: Conn) -> None:
    conn.execute("CREATE TABLE a (id int PRIMARY KEY, body text, embedding vector(384))")
    conn.execute("CREATE TABLE b (id int PRIMARY KEY, body text, embedding halfvec(384))")
    conn.execute("SELECT embeddings.watch('a', 'body'), embeddings.watch('b', 'body')")
    assert column_type(conn, "a", "embedding") == "vector(384)"
    assert "vector_cosine_ops" in hnsw_indexes(conn, "a")[0]
    assert "halfvec_cosine_ops" in hnsw_indexes(conn, "b")[0]


def test_watch_keeps_an_existing_hnsw_index(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec(384))")
    conn.execute("CREATE INDEX my_index ON docs USING hnsw (embedding halfvec_cosine_ops)")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    assert len(hnsw_indexes(conn, "docs")) == 1


def test_watch_with_a_content_function(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    conn.execute(
        "CREATE FUNCTION doc_input(d docs) RETURNS text LANGUAGE sql IMMUTABLE"
        " AS $$ SELECT '# ' || d.title || E'\\n\\n' || d.body $$"
    )
    conn.execute("INSERT INTO docs VALUES (1, 't', 'b'), (2, NULL, NULL)")
    target = conn.execute("SELECT embeddings.watch('docs', 'doc_input')").fetchone()
    assert target is not None
    # '# ' || NULL is NULL: row 2 has no content, but watch() runs no content function (its
    # backfill queues keys only: docs/security.md), so it is queued; the worker, which runs it
    # as the table's owner, finds it blank and has nothing to write.
    assert queued_keys(conn, target[0]) == [1, 2]
    assert conn.execute("SELECT content_function::text FROM embeddings.targets").fetchone() == (
        "doc_input(docs)",
    )


def test_watch_again_with_the_same_arguments_changes_nothing(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'a')")
    first = conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone()
    before = (messages(conn), trigger_names(conn, "docs"))
    second = conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone()
    assert first == second
    assert (messages(conn), trigger_names(conn, "docs")) == before


def test_watch_again_with_new_arguments_updates_the_registration(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'a', 'b')")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")  # watch()'s lane
    conn.execute("UPDATE docs SET embedding = array_fill(0.1, ARRAY[384])::halfvec")

    # Only the trigger options change: no re-embedding, the clear trigger goes away.
    conn.execute("SELECT embeddings.watch('docs', 'body', clear_on_update => false)")
    assert trigger_names(conn, "docs") == ["embeddings_1_insert", "embeddings_1_update"]
    assert messages(conn) == []

    # The content source changes: every row with content is queued again.
    conn.execute("SELECT embeddings.watch('docs', 'title', clear_on_update => false)")
    assert queued_keys(conn, 1) == [1]
    assert conn.execute("SELECT content_column FROM embeddings.targets").fetchone() == ("title",)

    # No triggers: registered, triggers gone.
    conn.execute("SELECT embeddings.watch('docs', 'title', triggers => false)")
    assert trigger_names(conn, "docs") == []
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (1,)


def test_watch_without_triggers_registers_only(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', triggers => false)")
    assert trigger_names(conn, "docs") == []
    conn.execute("INSERT INTO docs VALUES (1, 'a')")
    assert messages(conn) == []


def test_unwatch_removes_triggers_registration_and_jobs_and_keeps_data(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE other (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'a'), (2, 'b')")
    conn.execute("INSERT INTO other VALUES (1, 'a')")
    conn.execute("SELECT embeddings.watch('docs', 'body'), embeddings.watch('other', 'body')")
    conn.execute("UPDATE docs SET embedding = array_fill(0.1, ARRAY[384])::halfvec WHERE id = 1")

    assert conn.execute("SELECT embeddings.unwatch('docs')").fetchone() == (True,)

    assert trigger_names(conn, "docs") == []
    assert conn.execute("SELECT source::text FROM embeddings.targets").fetchall() == [("other",)]
    assert [m["target"] for m in messages(conn)] == [2]  # other's job stays
    assert conn.execute("SELECT count(embedding), count(*) FROM docs").fetchone() == (1, 2)
    assert len(hnsw_indexes(conn, "docs")) == 1
    assert conn.execute("SELECT embeddings.unwatch('docs')").fetchone() == (False,)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        ("embeddings.unwatch(NULL)", "source"),
        ("embeddings.unwatch('docs', NULL)", "embedding_column"),
    ],
)
def test_unwatch_of_null_is_an_error_naming_the_argument(
    conn: Conn, call: str, argument: str
) -> None:
    """Not a NOTICE that "<NULL>.embedding is not watched" with an empty hint."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    with pytest.raises(
        psycopg.errors.NullValueNotAllowed, match=rf"unwatch\(\): {argument} must not be NULL"
    ):
        conn.execute(f"SELECT {call}")
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (1,)


@pytest.mark.parametrize(
    ("setup", "call", "error", "message"),
    [
        (
            "CREATE TABLE t (id int PRIMARY KEY, n int)",
            "embeddings.watch('t', 'n')",
            psycopg.errors.DatatypeMismatch,
            "content column public.t.n has type integer, not text",
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text)",
            "embeddings.watch('t', 'nope')",
            psycopg.errors.UndefinedColumn,
            'content "nope" is neither a column of public.t nor a function nope',
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text)",
            "embeddings.watch('t', 'x); DROP TABLE t; --')",
            psycopg.errors.UndefinedColumn,
            "is neither a column of public.t nor a function",
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text);"
            " CREATE FUNCTION f(r t) RETURNS integer LANGUAGE sql AS 'SELECT 1'",
            "embeddings.watch('t', 'f')",
            psycopg.errors.DatatypeMismatch,
            r"content function public.f\(public.t\) returns integer, not text",
        ),
        (
            "CREATE TABLE t (body text)",
            "embeddings.watch('t', 'body')",
            psycopg.errors.ObjectNotInPrerequisiteState,
            "table public.t has no primary key",
        ),
        (
            "CREATE TABLE t (a int NOT NULL, b int NOT NULL, body text)",
            "embeddings.watch('t', 'body', key => array['a', 'b'])",
            psycopg.errors.ObjectNotInPrerequisiteState,
            r"key \(a, b\) of public.t is not unique",
        ),
        (
            "CREATE TABLE t (a int, b int NOT NULL, body text, UNIQUE (a, b))",
            "embeddings.watch('t', 'body', key => array['a', 'b'])",
            psycopg.errors.ObjectNotInPrerequisiteState,
            r"key \(a, b\) of public.t has nullable columns",
        ),
        (
            "CREATE TABLE t (a int NOT NULL UNIQUE, body text)",
            "embeddings.watch('t', 'body', key => array['nope'])",
            psycopg.errors.UndefinedColumn,
            "does not name distinct columns of public.t",
        ),
        (
            "CREATE TABLE t (p point NOT NULL, body text); CREATE UNIQUE INDEX ON t ((p[0]))",
            "embeddings.watch('t', 'body', key => array['p'])",
            psycopg.errors.FeatureNotSupported,  # its type, not "add a unique constraint"
            r"key column public.t.p has type point, which has no default btree operator class",
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text, embedding vector(768))",
            "embeddings.watch('t', 'body')",
            psycopg.errors.DatatypeMismatch,
            r'embedding column public.t.embedding is public.vector\(768\), but model "gte-small" produces 384 dimensions',
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text, embedding real[])",
            "embeddings.watch('t', 'body')",
            psycopg.errors.DatatypeMismatch,
            r"has type real\[\], expected vector\(384\) or halfvec\(384\)",
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text)",
            "embeddings.watch('t', 'body', model => 'nope')",
            psycopg.errors.InvalidParameterValue,
            'unknown model "nope"',
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text)",
            "embeddings.watch('t', 'body', embedding_column => 'body')",
            psycopg.errors.DatatypeMismatch,
            "embedding column public.t.body has type text",
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text)",
            """embeddings.watch('t', 'body', embedding_column => '"Vec X"')""",
            psycopg.errors.InvalidName,
            "embedding column '\"Vec X\"' of public.t is written in SQL's double quotes",
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text)",
            "embeddings.watch('t', 'body', queue => 'Bad-Name')",
            psycopg.errors.InvalidParameterValue,
            'invalid queue name "Bad-Name"',
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text); CREATE VIEW v AS SELECT * FROM t",
            "embeddings.watch('v', 'body')",
            psycopg.errors.WrongObjectType,
            "v is not a table",
        ),
        (
            "",
            "embeddings.watch('missing', 'body')",
            psycopg.errors.UndefinedTable,
            'relation "missing" does not exist',
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text)",
            "embeddings.watch('t', NULL)",
            psycopg.errors.NullValueNotAllowed,
            "must not be NULL",
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, body text)",
            "embeddings.watch('t', 'body', embedding_column => '')",
            psycopg.errors.InvalidParameterValue,
            "embedding_column must not be empty",
        ),
        # The worker's sessions cannot see another session's temporary table.
        (
            "CREATE TEMP TABLE tmp2 (id int PRIMARY KEY, body text)",
            "embeddings.watch('tmp2', 'body')",
            psycopg.errors.WrongObjectType,
            "^tmp2 is a temporary table",
        ),
        # Our own tables and pgmq's: the registry would get a column and triggers.
        (
            "",
            "embeddings.watch('embeddings.targets', 'problem')",
            psycopg.errors.WrongObjectType,
            "embeddings.targets is a table of embed-worker's own",
        ),
        (
            "",
            "embeddings.watch('embeddings.failures', 'last_error')",
            psycopg.errors.WrongObjectType,
            "embeddings.failures is a table of embed-worker's own",
        ),
        (
            "",
            "embeddings.watch('pgmq.meta', 'queue_name')",
            psycopg.errors.WrongObjectType,
            "pgmq.meta is a table of embed-worker's own",
        ),
        # The system catalogs: a superuser's watch() would give information_schema's tables a
        # column and triggers (pg_catalog's refused them with a bare "permission denied").
        (
            "",
            "embeddings.watch('pg_catalog.pg_description', 'description')",
            psycopg.errors.WrongObjectType,
            r"^pg_description is a table of the system catalogs \(pg_catalog\): it cannot be watched",
        ),
        (
            "",
            "embeddings.watch('information_schema.sql_features', 'feature_name', key => '{feature_id, sub_feature_id}')",
            psycopg.errors.WrongObjectType,
            r"^information_schema\.sql_features is a table of the system catalogs \(information_schema\)",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_creates_nothing(
    conn: Conn, setup: str, call: str, error: type[Exception], message: str
) -> None:
    if setup:
        conn.execute(setup)
    columns_before = conn.execute(
        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped"
    ).fetchone()
    with pytest.raises(error, match=message):
        conn.execute(f"SELECT {call}")
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname ~ '^embeddings_[0-9]'"
    ).fetchone() == (0,)
    assert embedding_columns(conn) == []
    assert (
        conn.execute(
            "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped"
        ).fetchone()
        == columns_before
    )
    assert messages(conn) == []


@pytest.mark.parametrize(("store", "kind"), [("side", "side"), ("chunks", "chunk")])
def test_another_targets_side_or_chunk_table_is_refused(
    conn: Conn, minilm: str, store: str, kind: str
) -> None:
    """The worker writes it: watched, each vector written would queue a job of its own. It was
    accepted."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    target = stores.watch(conn, store, minilm)
    table = fetch_value(conn, "SELECT store_table::text FROM embeddings.targets")
    # A content function of its rows: it is not refused for want of a text column.
    conn.execute(
        f"CREATE FUNCTION as_text({table}) RETURNS text STABLE LANGUAGE sql AS 'SELECT $1::text'"
    )
    with pytest.raises(
        psycopg.errors.WrongObjectType,
        match=rf"^public\.{table} is the {kind} table of target public\.docs\.embedding:"
        " it cannot be watched",
    ) as refused:
        conn.execute(
            "SELECT embeddings.watch(%s, 'as_text', embedding_column => 'again', model => %s)",
            (table, minilm),
        )
    assert refused.value.diag.message_hint == "Watch public.docs, the table whose rows they embed."
    assert conn.execute("SELECT array_agg(id) FROM embeddings.targets").fetchone() == ([target],)


def test_a_column_name_written_in_sql_quotes_is_answered_with_the_name_to_pass(
    conn: Conn,
) -> None:
    """Column names are taken as the catalog holds them: `'"Body Text"'` is not `Body Text`.
    A new embedding column so named would keep the quotes in its name (watch() made it so,
    silently); a content column or key so named was refused without saying why."""
    conn.execute(
        'CREATE TABLE t (id int PRIMARY KEY, "Row Id" int NOT NULL UNIQUE, "Body Text" text)'
    )
    for call, error, hint in (
        (
            """embeddings.watch('t', '"Body Text"')""",
            psycopg.errors.UndefinedColumn,
            "without SQL's double quotes: 'Body Text'.",
        ),
        (
            """embeddings.watch('t', 'Body Text', key => ARRAY['"Row Id"'])""",
            psycopg.errors.UndefinedColumn,
            "without SQL's double quotes: 'Row Id'.",
        ),
        (
            "embeddings.watch('t', 'Body Text', embedding_column => '\"My \"\"Vec\"\"\"')",
            psycopg.errors.InvalidName,
            """embedding_column => 'My "Vec"'.""",
        ),
    ):
        with pytest.raises(error) as info:
            conn.execute(f"SELECT {call}")
        assert info.value.diag.message_hint is not None
        assert info.value.diag.message_hint.endswith(hint), info.value.diag.message_hint
    # Passed as the catalog holds them, the same names watch the table; a column the table
    # already has is used whatever its name holds, quotes included.
    conn.execute('ALTER TABLE t ADD COLUMN """Vec""" halfvec(384)')
    conn.execute(
        """SELECT embeddings.watch('t', 'Body Text', key => ARRAY['Row Id'],"""
        """ embedding_column => '"Vec"')"""
    )
    assert conn.execute(
        "SELECT content_column, embedding_column FROM embeddings.targets"
    ).fetchone() == (
        "Body Text",
        '"Vec"',
    )


def test_a_target_named_by_a_column_it_is_not_watched_with_is_answered_with_its_columns(
    conn: Conn, role: str
) -> None:
    """unwatch(), cancel_change(), rewatch(), search(), adopt_vectors() and
    adopt_fingerprints() given an embedding column the table is not watched with (`'"vec"'`
    in SQL's quotes, or a typo) said "not watched", and search() told to watch() a table that
    is watched: each names the columns it is watched with."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE plain (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('t', 'body', embedding_column => 'vec')")
    conn.execute("SELECT embeddings.watch('t', 'body', embedding_column => 'Vec 2')")
    watched = "public.t is watched with embedding_column => 'vec' or 'Vec 2'."
    vector = "array_fill(0.1, ARRAY[384])::halfvec"
    for call in (
        "embeddings.rewatch('t', '\"vec\"')",
        f"embeddings.search('t', {vector}, 3, embedding_column => 'embedding')",
        "embeddings.adopt_vectors('t', 'vec2')",
        "embeddings.adopt_fingerprints('t')",
    ):
        with pytest.raises(psycopg.errors.UndefinedObject) as info:
            conn.execute(f"SELECT * FROM {call}")
        assert info.value.diag.message_hint == watched, call
    # search() runs as its caller: a role that may read the table is answered alike.
    conn.execute(f"GRANT USAGE ON SCHEMA embeddings TO {role}")
    conn.execute(f"GRANT SELECT ON t TO {role}")
    conn.execute(f"SET ROLE {role}")
    try:
        with pytest.raises(psycopg.errors.UndefinedObject) as info:
            conn.execute(
                f"SELECT * FROM embeddings.search('t', {vector}, 3, embedding_column => 'v')"
            )
        assert info.value.diag.message_hint == watched
    finally:
        conn.execute("RESET ROLE")
    with pytest.raises(psycopg.errors.UndefinedObject) as info:
        conn.execute(f"SELECT * FROM embeddings.search('plain', {vector}, 3)")
    assert (
        info.value.diag.message_hint
        == "SELECT embeddings.watch('public.plain', '<content column>');"
    )

    hints: list[str | None] = []  # read in the handler: a notice's result is freed after it
    conn.add_notice_handler(lambda notice: hints.append(notice.message_hint))
    for call in ("embeddings.unwatch('t')", "embeddings.cancel_change('t', '\"Vec 2\"')"):
        assert conn.execute(f"SELECT {call}").fetchone() == (False,)
    assert conn.execute("SELECT embeddings.unwatch('plain')").fetchone() == (False,)
    assert hints == [
        watched,
        watched,
        "No column of public.plain is watched.",
    ]
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (2,)


def test_an_unknown_model_is_answered_with_the_closest_name_and_register_model(conn: Conn) -> None:
    """issue 37: watch(..., model => 'typo') hinted INSERT INTO embeddings.models only; the
    same hint serves set_default_model() and a model change."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    for statement, typo in (
        ("SELECT embeddings.watch('t', 'body', model => 'all-MiniLM-L6v2')", "all-MiniLM-L6v2"),
        ("SELECT embeddings.set_default_model('GTE-smal')", "GTE-smal"),
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            conn.execute(statement)
        assert f'unknown model "{typo}"' in str(info.value)
        hint = info.value.diag.message_hint or ""
        closest = "all-MiniLM-L6-v2" if "MiniLM" in typo else "gte-small"
        assert hint.startswith(f'Did you mean "{closest}"?'), hint
        assert "embeddings.register_model()" in hint and "Known models: " in hint
    with pytest.raises(psycopg.errors.InvalidParameterValue) as far:
        conn.execute("SELECT embeddings.watch('t', 'body', model => 'text-embedding-3-small')")
    assert "Did you mean" not in (far.value.diag.message_hint or "")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("t" * 63, "side"),
        ("t" * 63, "chunks"),
        ("é" * 30, "chunks"),  # 60 bytes: `_chunks` makes 67, over 63 in 37 characters
        ("é" * 29, "side"),  # 58 bytes: `_embeddings` makes 69
    ],
)
def test_a_derived_store_table_name_too_long_is_refused_with_what_to_pass(
    conn: Conn, name: str, kind: str
) -> None:
    """`<table>_embeddings` and `<table>_chunks` of a long name were cut by Postgres to 63
    bytes, the table's own name: watch() said the table was watched or not made by us. It says
    the name is too long and which option to pass; the option given, the table is watched."""
    conn.execute(f'CREATE TABLE "{name}" (id int PRIMARY KEY, body text)')
    options = "store => 'side'" if kind == "side" else "chunk_tokens => 64"
    option, suffix = ("side_table", "_embeddings") if kind == "side" else ("chunk_table", "_chunks")
    with pytest.raises(psycopg.errors.NameTooLong) as refused:
        conn.execute(f"SELECT embeddings.watch('\"{name}\"', 'body', {options})")
    conn.rollback()
    derived = name + suffix
    quoted = fetch_value(conn, "SELECT format('%%I', %s::text)", (derived,))
    assert str(refused.value.diag.message_primary) == (
        f"the {'side' if kind == 'side' else 'chunk'} table's name public.{quoted} is "
        f"{len(derived.encode())} bytes, over Postgres' 63"
    )
    assert refused.value.diag.message_hint == f"Name the table with {option} => '...'."
    conn.execute(
        f"SELECT embeddings.watch('\"{name}\"', 'body', {options}, {option} => 'short_store')"
    )
    assert conn.execute("SELECT to_regclass('short_store') IS NOT NULL").fetchone() == (True,)


@pytest.mark.parametrize(
    ("given", "too_long", "option"),
    [
        ("s" * 64, "s" * 64, "side_table"),
        ("public." + "c" * 64, "c" * 64, "chunk_table"),
        ('"' + "é" * 32 + '"', "é" * 32, "side_table"),  # 64 bytes in 32 characters
        ("x" * 64 + ".store", "x" * 64, "chunk_table"),  # the schema's name: another schema
    ],
)
def test_an_explicit_store_table_name_too_long_is_refused_naming_the_option(
    conn: Conn, given: str, too_long: str, option: str
) -> None:
    """`side_table =>` / `chunk_table =>` past 63 bytes were cut by Postgres (the side table
    without even a NOTICE): watch() made, or took, a table of another name than the one given.
    As for the names it derives, it refuses, naming the option and the limit; nothing is made."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute(f'CREATE SCHEMA "{"x" * 63}"')  # where the schema's name cut lands
    kind = "store => 'side'" if option == "side_table" else "chunk_tokens => 64"
    with pytest.raises(psycopg.errors.NameTooLong) as refused:
        conn.execute(f"SELECT embeddings.watch('t', 'body', {kind}, {option} => %s)", (given,))
    conn.rollback()
    quoted = fetch_value(conn, "SELECT format('%%I', %s::text)", (too_long,))
    literal = fetch_value(conn, "SELECT quote_literal(%s::text)", (given,))
    assert str(refused.value.diag.message_primary) == (
        f"{option} => {literal}: the name {quoted} is {len(too_long.encode())} bytes,"
        " over Postgres' 63"
    )
    assert "(max_identifier_length): name a shorter table (or schema)" in str(
        refused.value.diag.message_hint
    )
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.targets") == 0
    made = "SELECT count(*) FROM pg_class WHERE relname ~ '^(s{63}|c{63}|é{31}|store)$'"
    assert fetch_value(conn, made) == 0
    conn.execute(f"SELECT embeddings.watch('t', 'body', {kind}, {option} => %s)", ("a" * 63,))
    assert fetch_value(conn, "SELECT to_regclass(%s) IS NOT NULL", ("a" * 63,))
