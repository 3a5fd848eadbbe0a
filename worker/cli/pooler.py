"""doctor's check of the pooler in front of the database, against EMBED_POOL_MODE: what
worker/pooler.py observes (none, a session or a transaction pooler), said as a finding. Where
the worker and the commands that connect refuse to start, it fails."""

from __future__ import annotations

from worker import db, pooler
from worker.cli.findings import Finding
from worker.config import Settings

CHECK = "pooler"
FIX = "set EMBED_POOL_MODE=transaction for the worker and the CLI (docs/poolers.md)"


def findings(conn: db.Connection, dsn: str, settings: Settings) -> list[Finding]:
    """What `conn` (doctor's connection to `dsn`) runs behind, against settings.pool_mode."""
    seen = pooler.observe(conn, dsn, lock_timeout_ms=settings.lock_timeout_ms)
    if seen.kind == "none":
        detail = f"none: {seen.seen} (EMBED_POOL_MODE={settings.pool_mode})"
        return [Finding("ok", CHECK, detail)]
    if seen.kind == "unchecked":
        detail = f"behind a pooler; its mode not checked ({seen.seen})"
        return [Finding("warn", CHECK, detail, "run doctor again")]
    return [pooler_finding(settings.pool_mode, seen)]


def pooler_finding(pool_mode: str, seen: pooler.Pooler) -> Finding:
    """The finding behind a session or a transaction pooler `seen`."""
    if seen.kind == "session":
        detail = f"a session pooler: {seen.seen}"
        if pool_mode == "transaction":
            detail += " (EMBED_POOL_MODE=transaction works there too, at a reset per transaction)"
        return Finding("ok", CHECK, detail)
    if pooler.misconfigured(seen, pool_mode) is None:
        detail = f"a transaction pooler ({seen.seen}); EMBED_POOL_MODE={pool_mode}"
        return Finding("ok", CHECK, detail)
    return Finding(
        "FAIL",
        CHECK,
        f"a transaction pooler ({seen.seen}), but EMBED_POOL_MODE={pool_mode}: the worker's"
        " settings would reach the pool's other clients (search_path = pg_catalog, pg_temp) and"
        " what they set its statements; the worker and the commands that connect refuse to start",
        FIX,
    )
