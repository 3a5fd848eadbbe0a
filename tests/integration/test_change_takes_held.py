"""A model change away from a model the worker cannot load takes the jobs held for that model
at once (sql/44_changes.sql: start_change() releases the target's held jobs).

The worker held a row's job (its model missing: `run --once` exits 3). A model change to a
model it has can serve that row: while the old model cannot load, every row gets the new
vector alone (worker/pipeline/shadow.py). Before the fix the job stayed held for its minute:
the next `run --once` embedded the change's own job, exited 0 with the held job left, and
`status` said nothing was held (held_jobs 0, no reason: the hold was the old definition's)
while a job was; the swap waited out the hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.fetch import fetch_value
from worker import exits
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
ABSENT = "absent-model"  # registered, and no worker has it
ALSO_ABSENT = "also-absent-model"
LANES = ("embedding_jobs", "embedding_jobs_backfill")


def held_now(conn: Conn) -> int:
    """Jobs of either lane held back now: put back unread by a deferral, not yet visible."""
    return sum(
        int(
            fetch_value(
                conn,
                f"SELECT count(*) FROM pgmq.q_{lane}"
                " WHERE message ? 'held' AND read_ct = 0 AND vt > clock_timestamp()",
            )
        )
        for lane in LANES
    )


def status(conn: Conn) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT pending_jobs, held_jobs, deferred_reason FROM embeddings.status"
    ).fetchone()
    assert row is not None
    return tuple(row)


def held_for_an_absent_model(
    conn: Conn, run_once: Callable[..., Worker], worker_model: str
) -> None:
    """`held4` watched with a model no worker has, a row inserted, its job held by a run."""
    for name in (ABSENT, ALSO_ABSENT):
        conn.execute(
            "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
            " VALUES (%s, 32, 512, 'mean')",
            (name,),
        )
    conn.execute("CREATE TABLE held4 (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('held4', 'body', model => %s)", (ABSENT,))
    conn.execute("INSERT INTO held4 VALUES (1, 'one')")
    run_once(model=worker_model, expect=exits.UNSERVED)  # the job held: its model missing
    pending, held, reason = status(conn)
    assert (pending, held, held_now(conn)) == (1, 1, 1), (status(conn), held_now(conn))
    assert ABSENT in str(reason), reason


def test_a_change_away_from_a_model_that_cannot_load_takes_its_held_jobs_at_once(
    conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    new = tiny_models[0]
    held_for_an_absent_model(conn, run_once, new)

    conn.execute("SELECT embeddings.watch('held4', 'body', model => %s)", (new,))
    # The hold was the old definition's: status says none, and none is (the row's job and
    # the change's wait, visible).
    assert (*status(conn), held_now(conn)) == (2, 0, None, 0), (status(conn), held_now(conn))

    run_once(model=new)  # exit 0: nothing left
    assert status(conn) == (0, 0, None), status(conn)
    assert held_now(conn) == 0
    # Every row has the new model's vector, and the swap did not wait out the hold.
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.model_changes") == 0
    assert fetch_value(conn, "SELECT model FROM embeddings.targets") == new
    assert fetch_value(conn, "SELECT count(embedding) FROM held4") == 1


def test_a_change_to_a_model_that_cannot_load_either_holds_them_again_and_says_so(
    conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    """Taken at the change, the jobs come back to a worker that cannot serve the new model
    either: held again, under the change, which status and `run --once` (exit 3) tell."""
    held_for_an_absent_model(conn, run_once, tiny_models[0])
    conn.execute("SELECT embeddings.watch('held4', 'body', model => %s)", (ALSO_ABSENT,))
    run_once(model=tiny_models[0], expect=exits.UNSERVED)
    pending, held, reason = status(conn)
    assert pending > 0 and held == pending == held_now(conn), (status(conn), held_now(conn))
    assert ALSO_ABSENT in str(reason), reason
