"""A model change whose swap fails says so, and a change after a keep_old one completes.

A swap that fails does not go away by waiting (a view of the user's on the old column, a name
taken): complete_changes() records it, `status` and `doctor` show it as stopped (swap_failed)
with its fix, and the worker logs it once, not at every call (sql/44_changes.sql,
sql/52_stopped.sql, worker/process/changes.py).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.test_model_change import (
    EmbeddedDocs,
    embedded_docs,
    in_change,
    models,
    target_model,
)
from tests.support.deferred_indexes import hnsw_index_names
from tests.support.process import run_cli
from worker import status as status_model
from worker.pipeline.targets import TargetRegistry
from worker.process.changes import Completer
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

__all__ = ["embedded_docs", "models"]  # the fixtures, used by name


def test_a_swap_blocked_by_a_view_is_stopped_with_its_fix_logged_once(
    conn: Conn,
    dsn: str,
    embedded_docs: EmbeddedDocs,
    run_once: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new, _ = embedded_docs(20)
    conn.execute("CREATE VIEW docs_v AS SELECT id, embedding FROM docs")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (new,))
    run_once(model=old)  # every new vector written; the swap cannot drop the old column
    assert in_change(conn) and target_model(conn) == old

    (row,) = status_model.fetch(conn)
    assert [s["state"] for s in row["stopped"]] == ["swap_failed"]
    (stop,) = row["stopped"]
    # What uses the column, by the column's own name (not the name the swap renamed it to).
    assert "view public.docs_v depends on column embedding of table public.docs" in stop["reason"]
    assert "_replaced" not in stop["reason"]
    assert "keep_old => true" in stop["fix"] and "drop or alter" in stop["fix"]
    doctor = run_cli("doctor", "--database-url", dsn)
    assert "stopped (swap_failed)" in doctor.stdout, doctor.stdout
    assert "FAIL" in doctor.stdout

    # The worker says it once, not at every call.
    registry = TargetRegistry()
    registry.refresh(conn)
    completer = Completer()
    caplog.clear()  # (the run above said it too, once)
    with caplog.at_level(logging.WARNING, logger="worker.process.changes"):
        for _ in range(3):
            completer.run(conn, registry, force=True)
    said = [r.getMessage() for r in caplog.records if "docs_v" in r.getMessage()]
    assert len(said) == 1, said

    # The fix the status gives: keep the old column. The view follows it.
    conn.execute(
        "SELECT embeddings.rewatch('docs', 'embedding', model => %s, keep_old => true)", (new,)
    )
    assert conn.execute("SELECT result FROM embeddings_internal.complete_changes()").fetchall() == [
        ("done",)
    ]
    assert target_model(conn) == new
    assert conn.execute("SELECT count(*) FROM embeddings.stopped").fetchone() == (0,)
    view_column = conn.execute(
        "SELECT a.attname FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
        " JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
        " WHERE r.ev_class = 'docs_v'::regclass AND d.refobjid = 'docs'::regclass"
        " AND a.attname LIKE 'embedding%'"
    ).fetchall()
    assert view_column == [("embedding_previous",)]


def test_a_change_after_a_keep_old_change_completes(
    conn: Conn, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    old, new, _ = embedded_docs(20)
    conn.execute(
        "SELECT embeddings.rewatch('docs', 'embedding', model => %s, keep_old => true)", (new,)
    )
    run_once(model=old)
    assert target_model(conn) == new
    assert hnsw_index_names(conn, "docs") == {
        "embedding": "docs_embedding_idx",
        "embedding_previous": "docs_embedding_idx_previous",
    }
    # The next change (without keep_old) drops the old index with its column: no name of the
    # kept column's index is needed, and the swap goes through.
    conn.execute("SELECT embeddings.rewatch('docs', 'embedding')")
    run_once(model=new)
    assert not in_change(conn)
    assert conn.execute("SELECT count(*) FROM embeddings.stopped").fetchone() == (0,)
    assert hnsw_index_names(conn, "docs") == {
        "embedding": "docs_embedding_idx",
        "embedding_previous": "docs_embedding_idx_previous",
    }
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (20,)


def test_keep_old_with_a_column_kept_by_an_earlier_change_is_refused_at_start(
    conn: Conn, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    old, new, _ = embedded_docs(5)
    conn.execute(
        "SELECT embeddings.rewatch('docs', 'embedding', model => %s, keep_old => true)", (new,)
    )
    run_once(model=old)
    with pytest.raises(psycopg.errors.DuplicateColumn) as refused:
        conn.execute(
            "SELECT embeddings.rewatch('docs', 'embedding', model => %s, keep_old => true)",
            (old,),
        )
    assert "docs.embedding_previous exists" in str(refused.value)
    hint = refused.value.diag.message_hint or ""
    assert "ALTER TABLE public.docs DROP COLUMN embedding_previous" in hint
    assert not in_change(conn)
    # Its index alone (the column renamed away) is refused the same way, named.
    conn.execute("ALTER TABLE docs RENAME COLUMN embedding_previous TO kept_by_hand")
    with pytest.raises(psycopg.errors.DuplicateTable) as refused_index:
        conn.execute(
            "SELECT embeddings.rewatch('docs', 'embedding', model => %s, keep_old => true)",
            (old,),
        )
    assert "public.docs_embedding_idx_previous exists" in str(refused_index.value)
    assert "DROP INDEX public.docs_embedding_idx_previous" in (
        refused_index.value.diag.message_hint or ""
    )
    # A change already running, asked to keep the old column after all: refused the same way.
    conn.execute("SELECT embeddings.rewatch('docs', 'embedding', model => %s)", (old,))
    with pytest.raises(psycopg.errors.DuplicateTable):
        conn.execute(
            "SELECT embeddings.rewatch('docs', 'embedding', model => %s, keep_old => true)",
            (old,),
        )
    assert in_change(conn)


class CountedCalls:
    """A worker connection that notes when (on the test's clock) it runs complete_changes(),
    the rest passed through as it is."""

    def __init__(self, conn: Conn, clock: Callable[[], float]) -> None:
        self.conn = conn
        self.clock = clock
        self.calls: list[float] = []

    def execute(self, query: Any, params: Any = None) -> Any:
        if "complete_changes()" in query.as_string(self.conn):
            self.calls.append(self.clock())
        return self.conn.execute(query, params)


def test_a_failing_swap_is_tried_less_and_less_often_and_at_once_when_its_change_changes(
    conn: Conn, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    """A keeper round every second for ten minutes (a clock of the test's: no waiting). Each
    try of a failing swap takes the table's lock and runs the swap's DDL before it rolls back;
    before the fix one came every CHECK_SECONDS (2 s), for as long as the view stayed."""
    old, new, _ = embedded_docs(5)
    conn.execute("CREATE VIEW docs_v AS SELECT id, embedding FROM docs")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (new,))
    run_once(model=old)  # every new vector written; the swap cannot drop the old column
    assert in_change(conn)
    registry = TargetRegistry()
    registry.refresh(conn)
    now = [0.0]
    completer = Completer(clock=lambda: now[0])
    keeper = CountedCalls(conn, lambda: now[0])

    def rounds(seconds: int) -> list[float]:
        """The keeper's rounds for `seconds` more seconds; the times of the tries among them."""
        first = len(keeper.calls)
        for _ in range(seconds):
            completer.run(keeper, registry, force=False)  # type: ignore[arg-type]
            now[0] += 1
        return keeper.calls[first:]

    tries = rounds(600)
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert len(tries) < 25, tries  # (every 2 s: 300)
    assert gaps[0] <= 4 and min(gaps[-3:]) >= 30, gaps  # 2 s doubling, capped at 60 s, +-50%
    assert max(gaps) <= 90, gaps

    def just_tried() -> None:
        """Rounds up to the next try: the one after it is 2 s away at least (its pause)."""
        for _ in range(120):
            if rounds(1):
                return
        raise AssertionError(f"no try in 120 s: {keeper.calls}")

    # The new model's registration changes: tried again at the next round, the pause starting
    # over (2 s, 4 s...).
    just_tried()
    conn.execute("UPDATE embeddings.models SET description = 'redescribed' WHERE name = %s", (new,))
    at = now[0]
    retried = rounds(10)
    assert retried[0] == at and len(retried) >= 2, (at, retried)

    # The fix status gives (keep the old column), which changes the change alone: the swap
    # goes through at the next round, not after the pause.
    just_tried()
    conn.execute(
        "SELECT embeddings.rewatch('docs', 'embedding', model => %s, keep_old => true)", (new,)
    )
    at = now[0]
    assert rounds(1) == [at], (at, keeper.calls[-3:])
    assert target_model(conn) == new and not in_change(conn)
