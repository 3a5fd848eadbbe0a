"""doctor's check of the pooler in front of the database, against EMBED_POOL_MODE.

Behind a transaction pooler (PgBouncer's `pool_mode = transaction`, Supavisor's port 6543) a
client connection has no server session of its own, and the worker must reset each transaction's
(EMBED_POOL_MODE=transaction, docs/poolers.md): otherwise its settings reach the pool's other
clients and theirs reach its statements. Nothing tells a client which kind of pooler it talks
to, so it is observed: behind any pooler libpq's backend pid (the start-up message's) is the
pooler's cancel key, not the server backend's `pg_backend_pid()`; and only behind a transaction
pooler does a server backend serve two client connections that are both open (a second one
reuses the first's, freed at its COMMIT), or one client connection's transactions run in two
backends (the first's taken by the second connection's open transaction meanwhile).
"""

from __future__ import annotations

from worker import db, exceptions, queries
from worker.cli.findings import Finding
from worker.config import Settings

CHECK = "pooler"
FIX = "set EMBED_POOL_MODE=transaction for the worker and the CLI (docs/poolers.md)"


def findings(conn: db.Connection, dsn: str, settings: Settings) -> list[Finding]:
    """What `conn` (doctor's connection to `dsn`) runs behind, against settings.pool_mode."""
    first = _backend(conn)
    if first == conn.info.backend_pid:
        return [
            Finding(
                "ok",
                CHECK,
                f"none: connected to the server itself (EMBED_POOL_MODE={settings.pool_mode})",
            )
        ]
    try:
        shared = _shared_backends(conn, dsn, settings, first)
    except exceptions.EmbedWorkerError as exc:
        return [
            Finding(
                "warn", CHECK, f"behind a pooler; its mode not checked ({exc})", "run doctor again"
            )
        ]
    return [pooler_finding(settings.pool_mode, shared)]


def pooler_finding(pool_mode: str, shared: str | None) -> Finding:
    """The finding behind a pooler: `shared` says how its server sessions were seen shared
    between client connections (a transaction pooler), None when they were not (a session
    pooler, as far as seen)."""
    if shared is None:
        detail = "a session pooler: each client connection kept its server session"
        if pool_mode == "transaction":
            detail += " (EMBED_POOL_MODE=transaction works there too, at a reset per transaction)"
        return Finding("ok", CHECK, detail)
    if pool_mode == "transaction":
        return Finding("ok", CHECK, f"a transaction pooler ({shared}); EMBED_POOL_MODE=transaction")
    return Finding(
        "warn",
        CHECK,
        f"a transaction pooler ({shared}), but EMBED_POOL_MODE={pool_mode}: the worker's"
        " settings reach the pool's other clients (search_path = pg_catalog, pg_temp) and what"
        " they set reaches the worker's statements",
        FIX,
    )


def _shared_backends(conn: db.Connection, dsn: str, settings: Settings, first: int) -> str | None:
    """How the server backend `first`, which ran `conn`'s last transaction, was seen serving
    another client connection while `conn` is open; None when it was not."""
    with (
        db.translated(),
        db.connect(
            dsn,
            connect_timeout=5,
            lock_timeout_ms=settings.lock_timeout_ms,
            per_transaction=settings.per_transaction,
        ) as other,
        other.transaction(),
    ):
        second = _backend(other)
        if second == first:
            return f"two client connections, both open, ran in server session {first}"
        then = _backend(conn)  # (while the other holds its server session)
        if then != first:
            return f"one client connection's transactions ran in server sessions {first}, {then}"
    return None


def _backend(conn: db.Connection) -> int:
    row = conn.execute(queries.get("server_backend")).fetchone()
    assert row is not None
    return int(row[0])
