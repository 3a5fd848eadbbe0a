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

import psycopg

from worker import db, queries
from worker.pipeline.batch import Row
from worker.pipeline.targets import Target

log = logging.getLogger(__name__)


def record(conn: db.Connection, target: Target, rows: list[Row], *, shadow: bool = False) -> None:
    """Records the fingerprints of `rows`, whose vectors (`shadow`: new-model vectors in the
    shadow column) this transaction has just stored. Never fails the write (the SQL function
    catches its own errors): a vector without a fingerprint is only verified again."""
    rows = [r for r in rows if r.digest is not None]
    if not rows:
        return
    conn.execute(
        queries.compose("record_fingerprints"),
        {
            "target_id": target.id,
            "shadow": shadow,
            "keys": [r.key for r in rows],
            "hashes": [r.digest for r in rows],
        },
    )


def clear_failing(conn: db.Connection, target: Target, failed: list[Row]) -> set[str]:
    """Clears the vectors of the `failed` rows whose content raises now (their content function
    runs as the table's owner, in the target's function); returns the keys cleared. In a
    savepoint: a target that cannot be served now (its functions refuse) keeps its vectors and
    the rows' failures stand."""
    if not failed:
        return set()
    try:
        with conn.transaction():
            found = conn.execute(
                target.query("clear_failing"), target.key_params([r.key for r in failed])
            ).fetchall()
    except psycopg.Error as exc:
        if db.is_connection_error(exc):
            raise
        log.warning("%s: vectors of failing rows not cleared: %s", target.name, db.redact(str(exc)))
        return set()
    return {key for (key,) in found}
