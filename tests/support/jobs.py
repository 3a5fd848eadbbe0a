"""Looking into the queue from tests."""

from __future__ import annotations

from typing import Any

import psycopg

from worker.queue import message_keys

Conn = psycopg.Connection[Any]


def messages(conn: Conn, queue: str = "embedding_jobs") -> list[dict[str, Any]]:
    rows = conn.execute(
        psycopg.sql.SQL("SELECT message FROM pgmq.{} ORDER BY msg_id").format(
            psycopg.sql.Identifier(f"q_{queue}")
        )
    ).fetchall()
    return [r[0] for r in rows]


def queued_keys(conn: Conn, target_id: int, queue: str = "embedding_jobs") -> list[Any]:
    """Row keys queued for a target, in queue order."""
    keys: list[Any] = []
    for m in messages(conn, queue):
        if m.get("target") == target_id:
            keys.extend(message_keys(m))
    return keys


def clear_queue(conn: Conn, queue: str = "embedding_jobs") -> None:
    conn.execute("SELECT pgmq.purge_queue(%s)", (queue,))
