"""A target's name (worker/target.py: Target.name), as the worker's logs, errors, /readyz and
metrics' `target` label carry it: embeddings.status's, each part quoted where SQL needs it, so
that two tables never share one, and one table's trouble is never put on another's."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.integration.conftest import TINY_DIMS
from worker import db
from worker.models.loaded import LoadedModels
from worker.pipeline.lanes import Lanes
from worker.pipeline.targets import TargetRegistry
from worker.process import held

Conn = psycopg.Connection[Any]

# Three tables whose schema, table and column names, joined by dots unquoted, read alike.
TABLES = ('"a.b".c', 'a."b.c"', 'public."Docs"')


def watch_tables(conn: Conn, model: str) -> None:
    conn.execute('CREATE SCHEMA "a.b"; CREATE SCHEMA a')
    for table in TABLES:
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text,"
            f" embedding halfvec({TINY_DIMS}))"
        )
        conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (table, model))


def test_the_worker_names_a_target_as_status_does(
    conn: Conn, dsn: str, tiny_models: tuple[str, str]
) -> None:
    watch_tables(conn, tiny_models[0])
    status = dict(conn.execute("SELECT target_id, target FROM embeddings.status").fetchall())
    with db.connect(dsn) as worker_conn:
        targets = TargetRegistry().refresh(worker_conn)
    assert {t.id: t.name for t in targets.values()} == status
    assert sorted(status.values()) == [
        '"a.b".c.embedding',
        'a."b.c".embedding',
        'public."Docs".embedding',
    ]


def test_one_tables_problem_does_not_hold_a_table_named_alike(
    conn: Conn, dsn: str, tiny_models: tuple[str, str], embedders: LoadedModels
) -> None:
    """`"a.b".c` cannot be served (its column no longer fits the model); `a."b.c"`, whose name
    unquoted is the same, is served: its held jobs are released, /readyz does not list it."""
    model = tiny_models[0]
    embedders.get(model)  # loaded: its dimensions are known to the check
    watch_tables(conn, model)
    conn.execute(f'ALTER TABLE "a.b".c ALTER COLUMN embedding TYPE halfvec({TINY_DIMS + 1})')
    registry = TargetRegistry()
    with db.connect(dsn) as worker_conn:
        targets = registry.refresh(worker_conn)
    ids = {t.name: t.id for t in targets.values()}

    unservable = held.unservable("embedding_jobs", registry, embedders)
    assert list(unservable) == ['"a.b".c.embedding']
    servable = held.HeldJobs(
        "embedding_jobs", Lanes("embedding_jobs", 64), registry, embedders
    ).servable()
    assert ids['a."b.c".embedding'] in servable
    assert ids['"a.b".c.embedding'] not in servable
