"""A batch's wait for its documents' parses (worker/pipeline/chunks/parses.py), its stages taken
by hand: another target's rows in the same batch as a hostile file's row are not held up by
that file's parse (docs/documents.md#untrusted-bytes-parse-processes-and-their-budgets).

The hostile file runs into its time budget (about 14 s) whatever the machine; what is asserted
is what the load stage made of each row, not how long it took."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support import hostile_files
from tests.support.in_flight import InFlight
from worker.pipeline import stages, write
from worker.pipeline.batch import Batch, RowState
from worker.pipeline.chunks import parses
from worker.pipeline.parsing.service import SERVICE
from worker.pipeline.targets import TargetRegistry

Conn = psycopg.Connection[Any]

PAGE = "<h1>Fresh</h1><p>The opening hours of the reading room, from nine to five.</p>"


@pytest.fixture
def hostile_and_page(conn: Conn, minilm: str) -> Iterator[None]:
    """`files` holding a hostile file, watched first, then `pages` holding a page: one batch of
    watch()'s jobs carries both, `files`' row first."""
    conn.execute("CREATE TABLE files (id int PRIMARY KEY, body bytea)")
    conn.execute("INSERT INTO files VALUES (1, %s)", (hostile_files.pdf_slow_text(),))
    conn.execute("CREATE TABLE pages (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO pages VALUES (1, %s)", (PAGE,))
    conn.execute(
        "SELECT embeddings.watch('files', 'body', model => %s, chunk_tokens => 200)", (minilm,)
    )
    conn.execute(
        "SELECT embeddings.watch('pages', 'body', model => %s, chunk_tokens => 200,"
        " format => 'html')",
        (minilm,),
    )
    yield
    SERVICE.close()  # the hostile parse, still running, killed


def states(batch: Batch) -> dict[str, RowState]:
    return {f"{row.target.table}.{row.key}": row.state for row in batch.rows.values()}


@pytest.mark.slow
def test_a_page_riding_with_a_hostile_files_row_is_read_in_its_batch(
    hostile_and_page: None, in_flight: InFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load stage waited for `files`' parses before it asked for `pages`', and with one
    deadline for the batch: the page's parse began once the wait was over, and its row was
    postponed behind the hostile file's (then, with every batch of `files`' rows that it rode
    in, again)."""
    with in_flight.read() as (conn, queue, batch):
        assert [row.target.table for row in batch.rows.values()] == ["files", "pages"]
        stages.load(conn, batch, in_flight.embedders)
        assert states(batch) == {"files.1": RowState.POSTPONED, "pages.1": RowState.READY}
        stages.embed(in_flight.embedders, batch)
        write.write(conn, queue, batch, in_flight.settings)  # the file's job goes back

        # The next batch: the file's row, whose parse the first batch waited for, and a new
        # row of a plain table: the batch does not wait for the file's parse again.
        admin = psycopg.connect(in_flight.dsn, autocommit=True)
        with admin:
            admin.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            admin.execute("INSERT INTO notes VALUES (1, 'a note')")
            admin.execute("SELECT embeddings.watch('notes', 'body', model => 'all-MiniLM-L6-v2')")
        monkeypatch.setattr(parses, "PARSE_WAIT_SECONDS", 120.0)  # past the file's budget
        second = stages.read(conn, queue, TargetRegistry(), in_flight.settings)
        assert second is not None
        stages.load(conn, second, in_flight.embedders)
        assert states(second) == {"files.1": RowState.POSTPONED, "notes.1": RowState.READY}
