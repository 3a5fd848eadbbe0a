"""The side store: a target's vectors in a side table keyed like its table (watch(..., store =>
'side'), sql/56_side.sql). The worker never writes the application's rows: no new row version
per vector, no serialization failure of the application's REPEATABLE READ or SERIALIZABLE
transactions, none of its UPDATE triggers fired.

Written as the row store writes (the same generated function names: an upsert of the side row
after the md5 check, blank content deleting it), except that it takes no lock of the
application's row: embeddings_internal.lock_documents() (sql/41_locks.sql, on a table of ours no
one else may lock) orders two writers of one row from the check to COMMIT. Rows deleted from the
table leave their side rows behind until `forget`.
"""

from __future__ import annotations

from typing import ClassVar

from worker import db, queries
from worker.pipeline.batch import Row
from worker.pipeline.stores.row import RowStore
from worker.target import Target


class SideStore(RowStore):
    follows_deletes: ClassVar[bool] = True

    def lock(self, conn: db.Connection, target: Target, rows: list[Row]) -> set[str]:
        lock_documents(conn, target, rows)
        return set()

    def forget(self, conn: db.Connection, target: Target, gone: list[Row]) -> None:
        forget_rows(conn, target, gone)


def lock_documents(conn: db.Connection, target: Target, rows: list[Row]) -> None:
    """Orders this write of the rows after any other transaction's, until COMMIT (waiting at
    most EMBED_LOCK_TIMEOUT_MS for one: then lock_not_available)."""
    if rows:
        conn.execute(
            queries.compose("lock_documents"),
            {"target_id": target.id, "keys": [r.key for r in rows]},
        )


def forget_rows(conn: db.Connection, target: Target, gone: list[Row]) -> None:
    """Deletes what rows gone from the table left in a side or chunk table (the target's
    embeddings_<id>_forget(): a row of that key inserted since keeps its own)."""
    if not gone:
        return
    lock_documents(conn, target, gone)
    conn.execute(target.query("forget_rows"), target.key_params([r.key for r in gone]))
