"""Looking into the queue from tests."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from worker.pipeline.jobs import backfill_queue_name
from worker.pipeline.messages import message_keys

Conn = psycopg.Connection[Any]

# The triggers' keys not yet moved into the queue (sql/22_inbox.sql), each inbox row as the job
# message it stands for (the column shape), with the columns of a pgmq queue table.
INBOX = (
    "SELECT NULL::bigint AS msg_id, 0 AS read_ct, i.enqueued_at, NULL::timestamptz AS last_read_at,"
    " i.enqueued_at AS vt, jsonb_build_object('target', i.target, 'columns', i.columns) AS message,"
    " NULL::jsonb AS headers FROM embeddings.inbox i"
)

# Both lanes of the default queue as one relation (the live queue and its backfill lane), and
# the inbox, for tests that count or look into every queued job.
JOBS = (
    "(SELECT * FROM pgmq.q_embedding_jobs UNION ALL SELECT * FROM pgmq.q_embedding_jobs_backfill"
    f" UNION ALL {INBOX}) AS jobs"
)


def expire_leases(conn: Conn, queue: str = "embedding_jobs") -> None:
    """What waiting out EMBED_VT_SECONDS does to the jobs a dead worker held, in both lanes."""
    for name in lanes(conn, queue):
        conn.execute(
            psycopg.sql.SQL("UPDATE pgmq.{} SET vt = clock_timestamp()").format(
                psycopg.sql.Identifier(f"q_{name}")
            )
        )


def lanes(conn: Conn, queue: str) -> list[str]:
    """`queue` and its backfill lane, where that exists (every queue of ours has one)."""
    backfill = backfill_queue_name(queue)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pgmq.q_{backfill}",)).fetchone()
    return [queue, backfill] if row and row[0] else [queue]


def messages(conn: Conn, queue: str = "embedding_jobs") -> list[dict[str, Any]]:
    """The jobs of `queue`, of its backfill lane and of its inbox, in the order they were
    enqueued (the inbox's after the queue's written at the same time: they are newer)."""
    parts = [
        psycopg.sql.SQL("SELECT message, enqueued_at, msg_id FROM pgmq.{}").format(
            psycopg.sql.Identifier(f"q_{name}")
        )
        for name in lanes(conn, queue)
    ]
    parts.append(
        psycopg.sql.SQL(
            "SELECT jobs.message, jobs.enqueued_at, 9223372036854775807 FROM ({}) jobs"
            " JOIN embeddings.targets t ON t.id = (jobs.message ->> 'target')::int"
            " WHERE t.queue = {}"
        ).format(psycopg.sql.SQL(INBOX), psycopg.sql.Literal(queue))
    )
    query = psycopg.sql.SQL("SELECT message FROM ({}) m ORDER BY enqueued_at, msg_id").format(
        psycopg.sql.SQL(" UNION ALL ").join(parts)
    )
    return [r[0] for r in conn.execute(query).fetchall()]


def queued_keys(conn: Conn, target_id: int, queue: str = "embedding_jobs") -> list[Any]:
    """Row keys queued for a target, in queue order."""
    keys: list[Any] = []
    for m in messages(conn, queue):
        if m.get("target") == target_id:
            keys.extend(message_keys(m))
    return keys


def keys_read_by_the_database(conn: Conn) -> list[Any]:
    """The row keys of the live lane's messages as the database itself reads them
    (embeddings_internal.message_keys), in message order."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT k FROM pgmq.q_embedding_jobs m, embeddings_internal.message_keys(m.message) k"
            " ORDER BY m.msg_id"
        ).fetchall()
    ]


def dead_letters(
    conn: Conn,
    keys: list[Any],
    *,
    target_id: int | None = None,
    target: str = "public.docs.embedding",
    queue: str = "embedding_jobs",
    error: str = "boom",
) -> None:
    """Dead-letters `keys` (JSON values, as jobs carry them) of target `target_id` (None: the
    only target) as the worker does after a job's last attempt (queries.sql: record_failures):
    one letter a key, in order, each with a job of that key alone."""
    conn.execute(
        "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message, attempts,"
        " last_error) SELECT t.id, %(target)s, l.k, %(queue)s,"
        " jsonb_build_object('target', t.id, 'keys', jsonb_build_array(l.k)), 5, %(error)s"
        " FROM (SELECT coalesce(%(id)s::integer, (SELECT id FROM embeddings.targets)) AS id) t,"
        " unnest(%(keys)s::jsonb[]) WITH ORDINALITY AS l(k, n) ORDER BY l.n",
        {
            "id": target_id,
            "target": target,
            "queue": queue,
            "error": error,
            "keys": [Jsonb(k) for k in keys],
        },
    )


def clear_queue(conn: Conn, queue: str = "embedding_jobs") -> None:
    for name in lanes(conn, queue):
        conn.execute("SELECT pgmq.purge_queue(%s)", (name,))
    conn.execute(
        "DELETE FROM embeddings.inbox i USING embeddings.targets t"
        " WHERE t.id = i.target AND t.queue = %s",
        (queue,),
    )


def move_inbox(conn: Conn, queue: str = "embedding_jobs") -> int:
    """What a worker's read does first: the inbox's keys into `queue` as job messages."""
    row = conn.execute("SELECT embeddings_internal.move_inbox(%s)", (queue,)).fetchone()
    assert row is not None
    return int(row[0])


def deferred_reason(conn: Conn) -> str:
    """The first target's deferral reason, as status shows it, once it is deferred (polled)."""
    from tests.support.process import wait_for

    return str(
        wait_for(
            lambda: conn.execute(
                "SELECT deferred_reason FROM embeddings_internal.target_status(true)"
            ).fetchone()[0],  # type: ignore[index]
            what="the target deferred",
        )
    )


def verify(conn: Conn, max_rows: int = 1000) -> int:
    """One verifying sweep (as pg_cron runs it); returns the rows it queued."""
    row = conn.execute(
        "SELECT embeddings.sweep(max_rows => %s, verify => true)", (max_rows,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def write_unseen(conn: Conn, statement: str) -> None:
    """Runs `statement` on `docs` with its triggers off: a write the triggers never see (a bulk
    load, a restore), which only a verifying sweep finds."""
    conn.execute("ALTER TABLE docs DISABLE TRIGGER USER")
    conn.execute(statement)
    conn.execute("ALTER TABLE docs ENABLE TRIGGER USER")
