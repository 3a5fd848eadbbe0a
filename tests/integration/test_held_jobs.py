"""Held jobs (worker/process/held.py): what defer_jobs marks held for its target, and only that,
is what release_held_jobs makes visible; never a job a worker leased since."""

from __future__ import annotations

from typing import Any

import psycopg

from worker import db
from worker.pipeline import jobs as jobqueue

Conn = psycopg.Connection[Any]
QUEUE = "embedding_jobs"


def visible(conn: Conn) -> set[int]:
    rows = conn.execute(f"SELECT msg_id FROM pgmq.q_{QUEUE} WHERE vt <= clock_timestamp()")
    return {int(r[0]) for r in rows}


def test_only_jobs_still_held_for_the_target_are_released(dsn: str) -> None:
    with db.connect(dsn) as conn:
        conn.execute(f"SELECT pgmq.create('{QUEUE}')")
        ids = [
            int(r[0])
            for r in conn.execute(
                "SELECT pgmq.send(%s, jsonb_build_object('target', t, 'keys', jsonb_build_array(1)))"
                " FROM unnest(ARRAY[1, 1, 1, 2]) AS t",
                (QUEUE,),
            )
        ]
        held_1, leased_1, plain_1, held_2 = ids
        queue = jobqueue.Queue(QUEUE)
        queue.defer(conn, {held_1: 1, leased_1: 1, held_2: 2}, 60)
        conn.execute(
            f"UPDATE pgmq.q_{QUEUE} SET vt = clock_timestamp() + interval '60 s' WHERE msg_id = %s",
            (plain_1,),
        )  # another's lease, never held
        conn.execute("SELECT pgmq.set_vt(%s, %s, 30)", (QUEUE, leased_1))  # leased since
        assert visible(conn) == set()

        assert queue.release_held(conn, [1]) == 1
        assert visible(conn) == {held_1}
        assert queue.release_held(conn, [1]) == 0  # released once
        assert queue.release_held(conn, [2]) == 1
        assert visible(conn) == {held_1, held_2}
