"""doctor's check of what a new question costs the database: a search walks its table's HNSW
index, and the pages it reads come from the OS (or the disk) unless shared_buffers holds them. A
new question cost 1.7x the same question asked again at 100,000 rows and 3.1x at 1,000,000 with
the default 128 MB (docs/performance.md#search-paths-at-scale), so searched indexes larger than
shared_buffers are said here, with the fix (docs/operating.md#searches-are-slow)."""

from __future__ import annotations

import psycopg

from worker import db, queries
from worker.cli.findings import Finding

CHECK = "search memory"
SHOWN_INDEXES = 3  # named in the finding, largest first; the rest counted
MB = 1024 * 1024


def findings(conn: db.Connection) -> list[Finding]:
    """The watched tables' HNSW indexes against shared_buffers (conn: a database with the schema
    installed)."""
    try:
        with conn.transaction():
            rows = conn.execute(queries.get("search_index_sizes")).fetchall()
            if not rows:
                return [memory_finding([], 0)]
    except psycopg.errors.LockNotAvailable:
        # An index's size takes a share lock on it: one held exclusively (a REINDEX, or a
        # tenant's open DROP INDEX) is waited for no longer than EMBED_LOCK_TIMEOUT_MS.
        return [Finding("warn", CHECK, "not checked: an HNSW index was locked", "run doctor again")]
    except psycopg.Error:
        return []  # the registry unreadable: the status check said so already
    indexes = [(str(name), int(size), int(scans)) for name, size, scans, _ in rows]
    return [memory_finding(indexes, int(rows[0][3]))]


def memory_finding(indexes: list[tuple[str, int, int]], shared_buffers: int) -> Finding:
    """`indexes`: each HNSW index's name, size in bytes and index scans since the statistics
    were reset, largest first. Only the searched ones need shared buffers (a table of fewer
    rows than exact_search_rows is scanned, its index never walked); all count while none
    was searched yet (a new server, statistics just reset)."""
    if not indexes:
        return Finding("ok", CHECK, "no watched table has an HNSW index yet")
    searched = [(name, size) for name, size, scans in indexes if scans > 0]
    counted = searched or [(name, size) for name, size, _ in indexes]
    total = sum(size for _, size in counted)
    sizes = f"{_mb(total)} of HNSW indexes"
    if searched and len(searched) < len(indexes):
        sizes += f" searched ({len(indexes) - len(searched)} more never searched, not counted)"
    sizes += f", shared_buffers {_mb(shared_buffers)}"
    if total <= shared_buffers:
        return Finding("ok", CHECK, f"{sizes}: shared buffers can hold them")
    shown = ", ".join(f"{name} {_mb(size)}" for name, size in counted[:SHOWN_INDEXES])
    if len(counted) > SHOWN_INDEXES:
        shown += f" and {len(counted) - SHOWN_INDEXES} more"
    return Finding(
        "warn",
        CHECK,
        f"{sizes} ({shown}): a new question's search reads the index pages it walks from "
        "the OS (1.7x to 3.1x a repeat's time: docs/performance.md#search-paths-at-scale)",
        "raise shared_buffers above the indexes searched (a restart), or pg_prewarm them after "
        "one; see docs/operating.md#searches-are-slow",
    )


def _mb(size: int) -> str:
    return f"{size / MB:,.0f} MB" if size >= MB else f"{size / 1024:,.0f} kB"
