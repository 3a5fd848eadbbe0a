"""`embed-worker plan`: rows, tokens, requests and cost before a backfill or a model change."""

from __future__ import annotations

import json
import math
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support.process import run_cli
from worker import db, exceptions
from worker.cli import plan

Conn = psycopg.Connection[Any]
BODY = "x" * 299 + " "  # 300 bytes: 100 estimated tokens


@pytest.fixture
def priced(conn: Conn) -> str:
    conn.execute(
        "SELECT embeddings.register_model('te3-small', 1536, 'openai',"
        " 'https://api.openai.com/v1', 'text-embedding-3-small', max_inputs => 100,"
        " max_request_tokens => 5000, price_per_million_tokens => 0.02)"
    )
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, %s FROM generate_series(1, 300) g", (BODY,))
    return "te3-small"


def test_a_backfill_plan_counts_the_rows_without_vectors(dsn: str, conn: Conn, priced: str) -> None:
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (priced,))
    with db.connect(dsn) as c:
        found = plan.make(c, "docs")
    assert found.rows == 300 and found.rows_from == plan.COUNTED
    # No statistics yet: plan reads no content (docs/providers.md#cost), it says how to get some
    assert found.tokens_per_row is None and found.tokens is None and found.cost is None
    assert "run ANALYZE public.docs" in found.tokens_from
    assert found.requests == 3  # by inputs (100 each) alone
    conn.execute("ANALYZE docs")
    with db.connect(dsn) as c:
        analyzed = plan.make(c, "docs")
    assert analyzed.tokens_from == "from the column's statistics"
    # avg_width counts each value's 4-byte header: 304 bytes, ~101 tokens
    assert analyzed.tokens == pytest.approx(30_000, rel=0.02)
    # 3 requests by inputs (100 each), 7 by tokens (5000 each): the larger
    assert analyzed.requests == 7
    assert analyzed.cost == pytest.approx(30_000 * 0.02 / 1e6, rel=0.02)


def test_a_model_change_plans_every_row_and_a_table_not_watched_yet(
    dsn: str, conn: Conn, priced: str, minilm: str
) -> None:
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, backfill => false)", (minilm,)
    )
    conn.execute("UPDATE docs SET embedding = array_fill(0.1, ARRAY[384])::halfvec WHERE id <= 100")
    conn.execute("ANALYZE docs")
    with db.connect(dsn) as c:
        assert plan.make(c, "docs").rows == 200  # local: no requests, no cost
        assert plan.make(c, "docs").requests is None
        change = plan.make(c, "docs", model=priced)
    assert change.rows == 300 and change.cost == pytest.approx(30_000 * 0.02 / 1e6, rel=0.02)
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, txt text)")
    conn.execute("INSERT INTO notes SELECT g, 'abc' FROM generate_series(1, 10) g")
    with db.connect(dsn) as c:
        before = plan.make(c, "notes", content="txt", model=priced)
        assert before.tokens is None and "run ANALYZE" in before.tokens_from
        conn.execute("ANALYZE notes")
        new = plan.make(c, "notes", content="txt", model=priced)
        # estimated, not counted: 10 rows of 4 bytes (3 and a 1-byte header), ~1.3 tokens each
        assert new.rows == 10 and new.rows_from == plan.ESTIMATED and new.tokens == 14
        with pytest.raises(exceptions.ConfigError, match="--content COLUMN --model M"):
            plan.make(c, "notes")


def test_rows_with_blank_or_null_content_are_not_rows_to_embed(
    dsn: str, conn: Conn, minilm: str
) -> None:
    """6 rows, 4 embedded, 2 cleared (blank, NULL: no vector is made for them, status counts
    them apart): `rows to embed 2` said those 2 were still to come, for good."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO notes VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, ' '), (6, NULL)"
    )
    conn.execute(
        "SELECT embeddings.watch('notes', 'body', model => %s, backfill => false)", (minilm,)
    )
    conn.execute("UPDATE notes SET embedding = array_fill(0.1, ARRAY[384])::halfvec WHERE id <= 4")
    with db.connect(dsn) as c:
        assert plan.make(c, "notes").rows == 0
        assert plan.make(c, "notes", model="all-MiniLM-L6-v2").rows == 4  # a change: those 4
        with pytest.raises(exceptions.ConfigError) as info:  # said as search says it
            plan.make(c, "notes", column="nosuch")
    assert str(info.value) == (
        "notes is not watched with embedding column 'nosuch': its embedding column is 'embedding'"
    )


def test_a_partitioned_table_is_estimated_from_its_partitions(
    dsn: str, conn: Conn, priced: str
) -> None:
    """Autovacuum analyzes partitions, never their parent: their statistics are enough."""
    conn.execute("CREATE TABLE parts (id int, txt text, PRIMARY KEY (id)) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100)")
    conn.execute("CREATE TABLE parts_2 PARTITION OF parts FOR VALUES FROM (100) TO (200)")
    conn.execute("INSERT INTO parts SELECT g, %s FROM generate_series(1, 150) g", (BODY,))
    conn.execute("ANALYZE parts_1")
    conn.execute("ANALYZE parts_2")
    with db.connect(dsn) as c:
        found = plan.make(c, "parts", content="txt", model=priced)
    assert found.rows == 150 and found.rows_from == plan.ESTIMATED
    assert found.tokens == pytest.approx(15_000, rel=0.02)


@pytest.mark.parametrize(
    ("create", "kind"),
    [
        ("CREATE VIEW seen AS SELECT id, body FROM docs", "a view"),
        ("CREATE MATERIALIZED VIEW seen AS SELECT id, body FROM docs", "a materialized view"),
        (  # (a file that is not there: reading it would fail)
            "CREATE EXTENSION file_fdw; CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;"
            " CREATE FOREIGN TABLE seen (id int, body text) SERVER files"
            " OPTIONS (filename '/nonexistent/seen.csv', format 'csv')",
            "a foreign table",
        ),
    ],
)
def test_a_relation_that_is_not_a_table_is_refused_unread(
    dsn: str, conn: Conn, priced: str, create: str, kind: str
) -> None:
    """watch() takes tables only; plan reads no other relation (a view's rows come from
    running it: tests/security/test_operator_commands.py)."""
    if (
        "file_fdw" in create
        and not conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'file_fdw'"
        ).fetchone()
    ):
        pytest.skip("file_fdw is not offered by this server (postgresql-contrib)")
    conn.execute(create)
    with db.connect(dsn) as c, pytest.raises(exceptions.ConfigError, match=f"seen is {kind}"):
        plan.make(c, "seen", content="body", model=priced)


def test_a_plan_reads_no_other_watched_table_and_estimates_a_large_one(
    dsn: str, conn: Conn, priced: str
) -> None:
    """A watched table's rows are as `status` has them: counted up to status_exact_rows, else
    estimated; and only that table's. plan had every watched table counted, however large, to
    give one (18.7 s for 200 rows beside two of a million)."""
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (priced,))
    conn.execute("CREATE TABLE big (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
    conn.execute("SELECT embeddings.watch('big', 'body', model => %s)", (priced,))
    conn.execute("ANALYZE big")
    conn.execute(f"ALTER DATABASE {conn.info.dbname} SET embeddings.status_exact_rows = 500")
    conn.execute("SET embeddings.status_exact_rows = 500")  # this session's too

    def reads_of_big() -> int:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        (n,) = conn.execute(
            "SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables"
            " WHERE relid = 'big'::regclass"
        ).fetchone() or (0,)
        return int(n)

    before = reads_of_big()
    with db.connect(dsn) as c:
        small = plan.make(c, "docs")
        large = plan.make(c, "big")
        c.execute("SELECT pg_stat_force_next_flush()")
    assert small.rows == 300 and small.rows_from == plan.COUNTED
    shown = conn.execute(
        "SELECT total_rows - coalesce(embedded_rows, 0), estimated FROM embeddings.status"
        " WHERE target_id = (SELECT id FROM embeddings.targets WHERE source = 'big'::regclass)"
    ).fetchone()
    assert shown is not None and shown[1]  # status estimates it too
    assert large.rows == shown[0] and large.rows_from == plan.ESTIMATED
    assert reads_of_big() == before


def test_a_table_not_found_but_for_case_is_named_watched_or_not(dsn: str, conn: Conn) -> None:
    """plan is run before watch(): any table the role may read, named so but for case."""
    conn.execute('CREATE TABLE "Docs" (id int PRIMARY KEY, body text)')
    with db.connect(dsn) as c, pytest.raises(exceptions.ConfigError) as info:
        plan.make(c, "docs", content="body", model="all-MiniLM-L6-v2")
    assert str(info.value) == (
        'no table docs; did you mean "Docs"? (a name not in double quotes is read in lower case)'
    )
    with db.connect(dsn) as c, pytest.raises(exceptions.ConfigError) as info:
        plan.make(c, "nothing", content="body", model="all-MiniLM-L6-v2")
    assert str(info.value) == "no table nothing"
    conn.execute('CREATE TABLE "Release Notes" (id int PRIMARY KEY, body text)')
    with db.connect(dsn) as c, pytest.raises(exceptions.ConfigError) as info:
        plan.make(c, "release notes", content="body", model="all-MiniLM-L6-v2")
    assert str(info.value) == (
        'no table release notes: invalid name syntax; did you mean "Release Notes"? (a name with'
        " spaces or other signs than letters, digits and _ is written in double quotes)"
    )


def test_plan_on_the_command_line(dsn: str, conn: Conn, priced: str) -> None:
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE AS 'SELECT d.body'"
    )
    conn.execute("SELECT embeddings.watch('docs', 'doc_text', model => %s)", (priced,))
    env = {"DATABASE_URL": dsn}
    unknown = run_cli("plan", "docs", env=env)
    assert unknown.returncode == 0, unknown.stderr
    assert "content function (pass --tokens-per-row)" in unknown.stdout
    lines = unknown.stdout.splitlines()
    assert lines[0].split() == ["table", "docs"]  # labels and values, no empty header row
    assert not any(set(line) <= {"-", " "} for line in lines)
    given = run_cli("plan", "docs", "--tokens-per-row", "50", "--json", env=env)
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout) | {"tokens_from": None} == {
        "table": "docs",
        "model": "te3-small",
        "provider": "openai",
        "rows": 300,
        "rows_from": "counted",
        "tokens_per_row": 50.0,
        "tokens_from": None,
        "chunks": None,  # one vector a row
        "chunking": None,
        "tokens": 15_000,
        "requests": 3,
        "price_per_million_tokens": 0.02,
        "cost": 0.0003,
    }


def test_a_chunked_table_is_planned_by_its_chunks_and_files_are_not_guessed(
    dsn: str, conn: Conn, priced: str
) -> None:
    """A chunked row is embedded whole, in overlapping chunks: its tokens are not capped at
    the model's limit for one input, the overlap is embedded twice, and requests go by chunks.
    A bytea column holds files, whose bytes (compressed, zipped) say nothing of their text."""
    conn.execute(  # 2,999 bytes a row, which TOAST cannot compress: its statistics show them all
        "UPDATE docs d SET body = (SELECT string_agg(md5(random()::text || g || d.id), ' ')"
        " FROM generate_series(1, 91) g) || 'ab'"
    )
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 200,"
        " chunk_overlap => 20)",
        (priced,),
    )
    conn.execute("ANALYZE docs")
    with db.connect(dsn) as c:
        found = plan.make(c, "docs")
    # ~1,000 tokens a row, stored out of line (its statistics count an 18-byte pointer: 6
    # tokens, as plan said before), in chunks starting 180 apart: 6 a row
    assert found.tokens_from == plan.STATISTICS_AND_TOAST
    assert found.tokens_per_row is not None and 950 <= found.tokens_per_row <= 1_500, found
    per_row = found.tokens_per_row
    each = math.ceil((per_row - 20) / 180)
    assert found.rows == 300 and found.chunks == 300 * each, found
    assert found.chunking == "of at most 200 tokens, 20 overlapping"
    tokens = found.tokens
    assert tokens is not None and tokens == pytest.approx(
        300 * (per_row + (each - 1) * 20), rel=0.01
    )
    # by tokens (5,000 each) more than by inputs (100 chunks each)
    assert found.requests == math.ceil(tokens / 5_000)
    assert found.cost == pytest.approx(tokens * 0.02 / 1e6)

    conn.execute("CREATE TABLE files (id int PRIMARY KEY, body bytea)")
    conn.execute("INSERT INTO files SELECT g, '\\x255044462d'::bytea FROM generate_series(1, 5) g")
    conn.execute(
        "SELECT embeddings.watch('files', 'body', model => %s, chunk_tokens => 200)", (priced,)
    )
    conn.execute("ANALYZE files")
    with db.connect(dsn) as c:
        found = plan.make(c, "files")
    assert found.rows == 5 and found.chunks is None and found.tokens is None
    assert found.tokens_from == plan.FILES and found.requests is None and found.cost is None
    with db.connect(dsn) as c:
        given = plan.make(c, "files", tokens_per_row=380)
    assert (given.chunks, given.tokens) == (10, 5 * (380 + 20))  # 2 a row, overlap 20 (200 / 10)


def test_names_in_statements_to_paste_are_quoted_as_sql_reads_them(
    dsn: str, conn: Conn, minilm: str
) -> None:
    """QA clinits 1: the column after a quoted table was printed as it is (`"a"."b".Body Text`),
    and a name with a newline as `"line\\nbreak"`, which pasted names another table (one named
    with a backslash then n): a column is quoted as SQL needs, and a name holding what a
    terminal acts on is shown in U&"" escapes, the same name once pasted."""
    conn.execute('CREATE SCHEMA "My Schema.x"')
    conn.execute('CREATE TABLE "My Schema.x"."My""Table.é" (id int PRIMARY KEY, "Body Text" text)')
    conn.execute('CREATE TABLE public."user" (id int PRIMARY KEY, "order" text)')
    with db.connect(dsn) as c:
        spaced = plan.make(c, '"My Schema.x"."My""Table.é"', content="Body Text", model=minilm)
        keyword = plan.make(c, 'public."user"', content="order", model=minilm)
    assert spaced.tokens_from == (
        'unknown: no statistics of "My Schema.x"."My""Table.é"."Body Text" you may read'
        ' (run ANALYZE "My Schema.x"."My""Table.é", or pass --tokens-per-row)'
    )
    assert (
        'of public."user"."order" you may read (run ANALYZE public."user",' in keyword.tokens_from
    )
    controls, backslashes = "line\nbreak\n\ttab", "line\\nbreak\\n\\ttab"
    for name in (controls, backslashes):
        conn.execute(f'CREATE TABLE "{name}" (id int PRIMARY KEY, body text)')
    env = {"DATABASE_URL": dsn}
    shown = {}
    for name in (controls, backslashes):
        quoted = '"' + name + '"'
        result = run_cli("plan", quoted, "--content", "body", "--model", minilm, env=env)
        assert result.returncode == 0, result.stderr
        (tokens,) = [line for line in result.stdout.splitlines() if line.startswith("tokens")]
        shown[name] = tokens.split("(run ANALYZE ")[1].split(", or pass")[0]
    assert shown == {
        controls: 'public.U&"line\\000abreak\\000a\\0009tab"',
        backslashes: 'public."line\\nbreak\\n\\ttab"',
    }
    for number, pasted in enumerate(shown.values()):  # each, pasted, is its own table
        conn.execute(f"ANALYZE {pasted}")
        conn.execute(f"INSERT INTO {pasted} VALUES ({number})")
    for number, name in enumerate(shown):
        found = conn.execute(sql.SQL("SELECT id FROM public.{}").format(sql.Identifier(name)))
        assert found.fetchall() == [(number,)]


def test_a_table_named_in_another_unicode_form_is_suggested(dsn: str, conn: Conn) -> None:
    """QA clinits 5: `café` typed decomposed (NFD: e + U+0301) names no table made with `é`
    composed (NFC), since Postgres compares names by their bytes, and there was no hint: the
    suggestion compares the names NFC-normalized (the lookup itself stays byte-exact)."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    conn.execute(f'CREATE TABLE "{nfc}" (id int PRIMARY KEY, body text)')
    conn.execute(f'CREATE TABLE "Th{nfd}" (id int PRIMARY KEY, body text)')
    why = (
        "an accented letter typed decomposed (Unicode NFD) is another name than the same letter"
        " composed (NFC): Postgres compares names by their bytes"
    )
    with db.connect(dsn) as c:
        for given, meant in (
            (nfd, f'"{nfc}"'),
            (f"th{nfc}", f'"Th{nfd}"'),
            (f"Th{nfd}", f'"Th{nfd}"'),
        ):
            with pytest.raises(exceptions.ConfigError) as info:
                plan.make(c, given, content="body", model="all-MiniLM-L6-v2")
            if given == f"Th{nfd}":  # the same bytes, but for case
                why = "a name not in double quotes is read in lower case"
            assert str(info.value) == f"no table {given}; did you mean {meant}? ({why})"
        with pytest.raises(exceptions.ConfigError) as info:  # the lookup itself is byte-exact
            plan.make(c, f'"{nfd}"', content="body", model="all-MiniLM-L6-v2")
        assert "did you mean" in str(info.value)
