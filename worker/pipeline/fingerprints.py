"""Content fingerprints, written by the write stage in its own transaction (sql/64_verify.sql).

Each vector the worker stores gets a fingerprint of the content and the target definition it
was made from, so that embeddings.sweep(verify => true) can find vectors that no longer match
their row (writes our triggers never saw). The application's statements pay nothing for it.

A row whose content function raises (a re-registration with a function that fails for it) has
its vector cleared: no vector rather than one of an older definition; its failure is recorded
as any other row's.
"""

from __future__ import annotations

import logging

from worker import db, queries
from worker.pipeline.batch import Row, RowState
from worker.target import Target

log = logging.getLogger(__name__)


def record(conn: db.Connection, target: Target, rows: list[Row], *, shadow: bool = False) -> None:
    """Records the fingerprints of `rows`, whose vectors (`shadow`: new-model vectors in the
    shadow column) this transaction has just stored. Never fails the write (the SQL function
    catches its own errors; a role without EXECUTE on it, one not prepared by grant_worker(),
    gets a warning): a vector without a fingerprint is only verified, and embedded, again."""
    rows = [r for r in rows if r.digest is not None]
    if not rows:
        return
    what = (
        f"{target.name}: fingerprints not recorded (SELECT embeddings.grant_worker(current_user)"
        " as the schema owner gives the worker role what it needs)"
    )
    with db.best_effort(conn, what, log):
        conn.execute(
            queries.compose("record_fingerprints"),
            {
                "target_id": target.id,
                "shadow": shadow,
                "keys": [r.key for r in rows],
                "hashes": [r.digest for r in rows],
            },
        )


def record_written(
    conn: db.Connection,
    target: Target,
    embedded: list[Row],
    states: dict[str, RowState],
) -> None:
    """Records the fingerprints of the `embedded` rows whose vectors the write stored (`states`:
    the store's outcome by key): in the target's vector column, and during a model
    change in its shadow column too (a change's own jobs write only that one)."""
    written = [r for r in embedded if states.get(r.key) is RowState.WRITTEN]
    record(conn, target, [r for r in written if not r.shadow_only])
    shadow = [
        r for r in written if r.shadow_only or (target.in_change and r.shadow_vector is not None)
    ]
    record(conn, target, shadow, shadow=True)


def clear_failing(conn: db.Connection, target: Target, failed: list[Row]) -> set[str]:
    """Clears the vectors of the `failed` rows whose content raises now (their content function
    runs as the table's owner, in the target's function); returns the keys cleared. In a
    savepoint: a target that cannot be served now (its functions refuse) keeps its vectors and
    the rows' failures stand."""
    if not failed:
        return set()
    found: list[tuple[str]] = []
    with db.best_effort(conn, f"{target.name}: vectors of failing rows not cleared", log):
        found = conn.execute(
            target.query("clear_failing"), target.key_params([r.key for r in failed])
        ).fetchall()
    return {key for (key,) in found}
