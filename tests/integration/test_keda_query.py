"""The KEDA ScaledObject's query (deploy/kubernetes/scaledobject.yaml), run as the worker's
least-privilege role on a real database: it returns the number of rows waiting that a worker
can serve, as one integer, and 0 when idle."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import make_conninfo

SCALED_OBJECT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "scaledobject.yaml"


def keda_query() -> str:
    for doc in yaml.safe_load_all(SCALED_OBJECT.read_text()):
        if doc["kind"] == "ScaledObject":
            (trigger,) = doc["spec"]["triggers"]
            return str(trigger["metadata"]["query"])
    raise AssertionError("no ScaledObject")


def scalar(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(query).fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, rows  # KEDA reads one value
    return rows[0][0]


def test_the_scaler_query_counts_waiting_rows_as_the_worker_role(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    role = f"embed_worker_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
    worker_dsn = make_conninfo(dsn, user=role)
    query = keda_query()

    assert scalar(worker_dsn, query) == 0  # idle: no table watched yet

    for table, rows in (("docs", 300), ("notes", 40)):
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT embeddings.watch(%s, 'body', model => 'all-MiniLM-L6-v2')", (table,))
        conn.execute(
            f"INSERT INTO {table} SELECT g, 'text ' || g FROM generate_series(1, {rows}) g"
        )
    conn.execute("SELECT embeddings.grant_worker(%s)", (role,))  # the new tables

    waiting = scalar(worker_dsn, query)
    assert isinstance(waiting, int) and waiting == 340

    # The jobs of a table no worker serves now (held, deferred_reason says why) bring no
    # worker: they were counted, scaling up to maxReplicaCount for rows nobody could embed
    # and never down to minReplicaCount 0.
    notes = conn.execute("SELECT id FROM embeddings.targets WHERE source = 'notes'::regclass")
    (notes_id,) = notes.fetchone() or (None,)
    with psycopg.connect(worker_dsn) as worker:  # (what a worker records when it defers them)
        worker.execute(
            "SELECT embeddings_internal.note_deferrals(%s, %s, %s)",
            ([notes_id], ["model all-MiniLM-L6-v2 is not available here"], [1]),
        )
    assert scalar(worker_dsn, query) == 300
    conn.execute(f"DROP OWNED BY {role}")
    conn.execute(f"DROP ROLE {role}")
