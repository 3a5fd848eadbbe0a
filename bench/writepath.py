"""Write-path cost: a bulk INSERT (and UPDATE) into a watched table vs the same statement on an
unwatched one (watched with the vectors in the row, or in a side table: `watched_side`), with the
per-row `pgmq.send` trigger of Supabase's guide for comparison; and the
bulk INSERT into a composite-key table and into an 8-way partitioned table, watched or not.

Each variant runs in its own fresh table, alternating, several rounds; the report is the median
time and its ratio to the unwatched median. Both tables carry the same halfvec column and HNSW
index (empty at insert time), so the only difference is the triggers.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

ROWS = 100_000
BODY = "'Row ' || g || ': ' || repeat('some representative words of text ', 8)"
SUPABASE_TRIGGER = """
CREATE OR REPLACE FUNCTION bench_queue_embeddings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pgmq.send('bench_jobs', jsonb_build_object('id', NEW.id, 'schema', TG_TABLE_SCHEMA,
    'table', TG_TABLE_NAME, 'contentFunction', 'body', 'embeddingColumn', 'embedding'));
  RETURN NEW;
END $$;
"""


# Table shapes (issue 13): the single-key table of the first wave, a composite primary key,
# a table hash-partitioned 8 ways, and a text primary key (a variable-width key type: its keys
# are sliced into messages differently, sql/30_triggers.sql). Same columns, same rows.
SHAPES = {
    "single": "CREATE TABLE {name} (id bigint PRIMARY KEY, body text, embedding halfvec(384))",
    "composite": "CREATE TABLE {name} (tenant integer, id bigint, body text,"
    " embedding halfvec(384), PRIMARY KEY (tenant, id))",
    "partitioned": "CREATE TABLE {name} (id bigint PRIMARY KEY, body text,"
    " embedding halfvec(384)) PARTITION BY HASH (id)",
    "text_key": "CREATE TABLE {name} (id text PRIMARY KEY, body text, embedding halfvec(384))",
}
PARTITIONS = 8


def _table(conn: psycopg.Connection[Any], name: str, variant: str, shape: str = "single") -> None:
    conn.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
    conn.execute(SHAPES[shape].format(name=name))
    if shape == "partitioned":
        for i in range(PARTITIONS):
            conn.execute(
                f"CREATE TABLE {name}_{i} PARTITION OF {name}"
                f" FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {i})"
            )
    conn.execute(f"CREATE INDEX ON {name} USING hnsw (embedding halfvec_cosine_ops)")
    if variant in ("watched", "watched_before_key_shift"):
        conn.execute(f"SELECT embeddings.watch('{name}', 'body')")
        if variant == "watched_before_key_shift":
            without_key_shift_clause(conn, name)
    elif variant == "watched_side":  # vectors in a side table (docs/usage.md): other triggers
        conn.execute(f"SELECT embeddings.watch('{name}', 'body', store => 'side')")
    elif variant == "watched_function":  # a content function: through the target's wrapper
        conn.execute(
            f"CREATE FUNCTION {name}_text(t {name}) RETURNS text LANGUAGE sql STABLE"
            " AS $$ SELECT t.body $$"
        )
        conn.execute(f"SELECT embeddings.watch('{name}', '{name}_text')")
    elif variant == "per_row_send":
        conn.execute(
            f"CREATE TRIGGER q AFTER INSERT OR UPDATE OF body ON {name}"
            " FOR EACH ROW EXECUTE FUNCTION bench_queue_embeddings()"
        )


# The statement trigger as it was before it queued keys whose embedding the statement cleared
# (issue 25 §1: an UPDATE that shifts keys and content together): the same generated function
# with that clause taken out, to measure the clause's cost in the same run.
KEY_SHIFT_CLAUSE = " OR (n.embedding IS NULL AND o.embedding IS NOT NULL)"


def without_key_shift_clause(conn: psycopg.Connection[Any], table: str) -> None:
    row = conn.execute(
        "SELECT pg_get_functiondef(format('embeddings.embeddings_%%s_update()', t.id)::regprocedure)"
        " FROM embeddings.targets t WHERE t.source = %s::regclass",
        (table,),
    ).fetchone()
    assert row is not None and KEY_SHIFT_CLAUSE in row[0], "the trigger changed: update the bench"
    conn.execute(row[0].replace(KEY_SHIFT_CLAUSE, ""))


def _timed(conn: psycopg.Connection[Any], sql: str) -> float:
    started = time.perf_counter()
    conn.execute(sql)
    return time.perf_counter() - started


def run(dsn: str, rows: int = ROWS, rounds: int = 5) -> dict[str, Any]:
    variants = (
        "unwatched",
        "watched",
        "watched_before_key_shift",
        "watched_side",
        "watched_function",
        "per_row_send",
    )
    insert: dict[str, list[float]] = {v: [] for v in variants}
    update: dict[str, list[float]] = {v: [] for v in variants}
    # The other shapes, watched or not, insert only.
    shaped: dict[str, dict[str, list[float]]] = {
        shape: {"unwatched": [], "watched": []} for shape in SHAPES if shape != "single"
    }
    columns = {"composite": "tenant, id, body"}
    values = {"composite": "g % 16, g", "text_key": "'doc-' || g"}

    def insert_sql(name: str, shape: str) -> str:
        return (
            f"INSERT INTO {name} ({columns.get(shape, 'id, body')})"
            f" SELECT {values.get(shape, 'g')}, {BODY} FROM generate_series(1, {rows}) g"
        )

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pgmq.create('bench_jobs')")
        conn.execute(SUPABASE_TRIGGER)
        for _ in range(rounds):
            for variant in variants:
                name = f"bench_{variant}"
                _table(conn, name, variant)
                conn.execute("CHECKPOINT")
                insert[variant].append(_timed(conn, insert_sql(name, "single")))
                update[variant].append(
                    _timed(conn, f"UPDATE {name} SET body = body || ' (edited)'")
                )
                conn.execute(f"DROP TABLE {name} CASCADE")
                conn.execute(
                    "SELECT pgmq.purge_queue('embedding_jobs'), pgmq.purge_queue('bench_jobs')"
                )
                conn.execute("TRUNCATE embeddings.inbox")
            for shape, times in shaped.items():
                for variant in times:
                    name = f"bench_{shape}_{variant}"
                    _table(conn, name, variant, shape)
                    conn.execute("CHECKPOINT")
                    times[variant].append(_timed(conn, insert_sql(name, shape)))
                    conn.execute(f"DROP TABLE {name}")
                    conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")
        conn.execute("SELECT pgmq.drop_queue('bench_jobs')")

    def summary(times: dict[str, list[float]]) -> dict[str, Any]:
        base = statistics.median(times["unwatched"])
        return {
            v: {
                "median_s": round(statistics.median(t), 4),
                "ratio": round(statistics.median(t) / base, 2),
                "runs_s": [round(x, 4) for x in t],
            }
            for v, t in times.items()
        }

    return {
        "rows": rows,
        "rounds": rounds,
        "insert": summary(insert),
        "update": summary(update),
        "shapes": {shape: {"insert": summary(times)} for shape, times in shaped.items()},
        "partitions": PARTITIONS,
    }
