"""Long documents of chunked targets: embedded and committed a piece at a time, continued after a
restart, started over when someone else wrote them, and failed at once over the ceiling
(worker/pipeline/pieces.py), with a tiny random-weight model and a real database."""

from __future__ import annotations

import dataclasses
import queue as stdqueue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.in_flight import InFlight
from tests.support.jobs import messages
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import faults, pieces
from worker.pipeline.batch import RowState
from worker.pipeline.chunking import Splitter
from worker.pipeline.chunks import reading
from worker.process.handoffs import Handoffs
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

CHUNK_TOKENS = 64
PIECE_TOKENS = 256  # about four chunks a piece


def long_text(paragraphs: int, marker: str = "") -> str:
    return "\n\n".join(
        f"Section {i} {marker}. The planner estimates the cost of scan number {i * 7} from the "
        f"table statistics, and vacuum {i} reclaims dead row versions of page {i * 13}."
        for i in range(paragraphs)
    )


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(pieces, "CACHE", pieces.Cache())
    yield


@pytest.fixture
def model(tiny_models: tuple[str, str]) -> str:
    return tiny_models[0]


@pytest.fixture
def piece_settings(settings: Settings) -> Settings:
    return settings.with_overrides(piece_tokens=PIECE_TOKENS)


@pytest.fixture
def docs(conn: Conn, model: str) -> int:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, %s)", (long_text(40),))
    row = conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => %s,"
        " chunk_overlap => 8)",
        (model, CHUNK_TOKENS),
    ).fetchone()
    assert row is not None
    return int(row[0])


def expected_chunks(
    embedders: LoadedModels, model: str, text: str, chunk_tokens: int = CHUNK_TOKENS
) -> list[tuple[int, str]]:
    splitter = Splitter(embedders.tokenizer(model), chunk_tokens, 8)
    return [(c.seq, c.text) for c in splitter.split(text)]


def stored_chunks(conn: Conn, key: int = 1) -> list[tuple[int, str]]:
    return [
        (seq, chunk)
        for seq, chunk in conn.execute(
            "SELECT seq, chunk FROM docs_chunks WHERE id = %s ORDER BY seq", (key,)
        )
    ]


def progress(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT row_key, state, chunks_done, chunks_estimated FROM embeddings.document_progress"
    ).fetchall()


@dataclasses.dataclass(frozen=True)
class LongDocument(InFlight):
    """Document 1 of `docs`, watched as chunks, and what its tests drive the worker with (its
    settings: pieces of PIECE_TOKENS)."""

    target: int
    model: str
    run_once: Callable[..., Worker]

    def step(self) -> Any:
        """One batch of the backfill lane, read, embedded and written; returns the document's
        row."""
        batch, queue = self.lease()
        self.finish(batch, queue)
        (row,) = batch.rows.values()
        return row

    def expected(self, text: str, chunk_tokens: int = CHUNK_TOKENS) -> list[tuple[int, str]]:
        return expected_chunks(self.embedders, self.model, text, chunk_tokens)


@pytest.fixture
def doc(
    docs: int,
    model: str,
    piece_settings: Settings,
    dsn: str,
    embedders: LoadedModels,
    run_once: Callable[..., Worker],
) -> LongDocument:
    return LongDocument(piece_settings, dsn, embedders, docs, model, run_once)


@pytest.fixture
def counting(embedded_texts: list[str]) -> list[str]:
    """Every text the models embed."""
    return embedded_texts


def test_a_long_document_is_written_a_piece_at_a_time_with_its_progress(
    conn: Conn, doc: LongDocument
) -> None:
    expected = doc.expected(long_text(40))
    assert len(expected) > 8
    row = doc.step()
    assert row.state is RowState.PIECE
    first = stored_chunks(conn)
    assert 0 < len(first) < len(expected)
    assert first == expected[: len(first)]  # committed, and the content's own chunks
    ((key, state, done, estimated),) = progress(conn)
    assert (key, state, done) == ("1", "in_progress", len(first))
    assert estimated >= done
    (message,) = messages(conn)  # the rest of the document, queued again without an attempt
    assert message["keys"] == [1] and message["attempts"] == 0
    states: list[RowState] = [row.state]
    while states[-1] is RowState.PIECE and len(states) < 40:
        states.append(doc.step().state)
    assert states[-1] is RowState.WRITTEN
    assert len(states) > 2  # several pieces
    assert stored_chunks(conn) == expected
    assert progress(conn) == []
    assert messages(conn) == []


def test_a_restarted_worker_continues_where_the_committed_pieces_end(
    conn: Conn, doc: LongDocument, counting: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = doc.expected(long_text(40))
    doc.step()
    doc.step()
    done = len(stored_chunks(conn))
    monkeypatch.setattr(pieces, "CACHE", pieces.Cache())  # a new process: nothing in memory
    counting.clear()
    doc.run_once(piece_tokens=PIECE_TOKENS)
    assert stored_chunks(conn) == expected
    # Only the chunks past the committed ones were embedded again.
    assert set(counting) <= {text for seq, text in expected if seq >= done}
    assert progress(conn) == []


def test_a_piece_whose_write_rolled_back_is_written_again_with_its_vectors(
    conn: Conn, doc: LongDocument, counting: list[str]
) -> None:
    expected = doc.expected(long_text(40))
    doc.step()
    batch, queue = doc.lease()

    def lost() -> None:
        raise RuntimeError("connection lost at COMMIT")

    with faults.injected("before_commit", lost), pytest.raises(RuntimeError):
        doc.finish(batch, queue)
    (row,) = batch.rows.values()
    assert row.state is RowState.EMBEDDED  # nothing claimed: the transaction rolled back
    assert progress(conn)[0][2] == row.chunks.first_seq if row.chunks else False
    conn.execute("UPDATE pgmq.q_embedding_jobs_backfill SET vt = now()")  # the lease ran out
    doc.run_once(piece_tokens=PIECE_TOKENS)
    assert stored_chunks(conn) == expected
    assert len(counting) == len(expected)  # the piece's vectors were not computed twice
    assert progress(conn) == []


def test_a_document_edited_between_pieces_ends_with_the_new_contents_chunks_only(
    conn: Conn, doc: LongDocument
) -> None:
    doc.step()
    doc.step()
    new = long_text(30, marker="edited")
    conn.execute("UPDATE docs SET body = %s WHERE id = 1", (new,))
    doc.run_once(piece_tokens=PIECE_TOKENS)
    assert stored_chunks(conn) == doc.expected(new)
    assert progress(conn) == []


def test_a_continued_piece_is_not_sent_its_document_again_unless_it_changed(
    conn: Conn, doc: LongDocument, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A piece's load compares the md5 in the database with the cached document's: the same, the
    row's content is the cached text itself (a 10 MB document is not sent again per piece);
    changed since, it is the new content from the database."""
    cached: list[dict[str, pieces.Known]] = []
    known = pieces.Cache.known

    def spy(self: pieces.Cache, *args: Any) -> dict[str, pieces.Known]:
        cached.append(known(self, *args))
        return cached[-1]

    monkeypatch.setattr(pieces.Cache, "known", spy)
    doc.step()
    batch, queue = doc.lease()
    (row,) = batch.rows.values()
    assert row.content is cached[-1]["1"].text  # the very string cached, not a copy
    assert row.chunks is not None and row.chunks.first_seq > 0  # continued, not started over
    doc.finish(batch, queue)
    edited = long_text(40, marker="edited")
    conn.execute("UPDATE docs SET body = %s WHERE id = 1", (edited,))
    batch, queue = doc.lease()
    (row,) = batch.rows.values()
    assert cached[-1]["1"].text != edited  # the cache still held the old content
    assert row.content == edited
    doc.finish(batch, queue)


def test_a_live_row_that_arrives_while_a_piece_loads_goes_to_the_embedder_first(
    conn: Conn, doc: LongDocument
) -> None:
    """A row the application writes while the fetcher loads a long document's piece is handed
    to the embedder before that piece: it waits for the piece being embedded at most, not for
    the next one too."""
    worker = Worker(doc.settings, embedders=doc.embedders, progress=False, handle_signals=False)
    loaded: Handoffs = stdqueue.Queue()  # (the pipeline's holds one: here, what comes in order)
    fetcher = dataclasses.replace(worker.fetcher, loaded=loaded)
    arrived = threading.Event()

    def application_writes() -> None:
        if not arrived.is_set():
            arrived.set()
            with psycopg.connect(doc.dsn, autocommit=True) as app:
                app.execute("INSERT INTO docs VALUES (2, 'A short note.')")

    thread = threading.Thread(target=fetcher.run)
    try:
        with faults.injected("load", application_writes):
            thread.start()
            handed = [loaded.get(timeout=60), loaded.get(timeout=60)]
    finally:
        fetcher.stopping.set()
        fetcher.wake()
        thread.join(timeout=60)
    assert arrived.is_set()
    batches = [item.batch for item in handed if item is not None]
    assert [[key for _, key in b.rows] for b in batches] == [["2"], ["1"]]
    assert [b.has_piece for b in batches] == [False, True]


def test_a_document_written_by_another_since_its_last_piece_starts_over(
    conn: Conn, doc: LongDocument
) -> None:
    """The cache says "chunks 0..k are mine", but someone wrote another content whole since and
    the content came back: the record is gone, so the document starts over rather than mixing."""
    original = long_text(40)
    doc.step()
    doc.step()
    conn.execute("UPDATE docs SET body = 'A short interlude.' WHERE id = 1")
    doc.run_once(batch_size=1, piece_tokens=PIECE_TOKENS, max_document_bytes=0)
    assert stored_chunks(conn) == [(0, "A short interlude.")]
    conn.execute("UPDATE docs SET body = %s WHERE id = 1", (original,))
    doc.run_once(piece_tokens=PIECE_TOKENS)
    assert stored_chunks(conn) == doc.expected(original)


def test_a_document_re_watched_with_other_chunk_settings_mid_way_ends_with_the_new_chunks(
    conn: Conn, doc: LongDocument
) -> None:
    """Progress recorded under the old settings is void: the content is the same, its chunks
    are not."""
    doc.step()
    doc.step()
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 24,"
        " chunk_overlap => 8)",
        (doc.model,),
    )
    doc.run_once(piece_tokens=PIECE_TOKENS)
    expected = doc.expected(long_text(40), 24)
    assert expected[:16] != doc.expected(long_text(40))[:16]
    assert stored_chunks(conn) == expected
    assert progress(conn) == []


def test_a_document_deleted_and_inserted_again_between_pieces_is_written_whole(
    conn: Conn, doc: LongDocument
) -> None:
    """Same key, same content: the recorded progress matches, and the chunks it speaks of are
    still there (the delete's job, which would take them, found the row back): the document
    goes on from the record and ends with its content's chunks."""
    doc.step()
    doc.step()
    assert progress(conn)
    # The piece's job on the live lane (a document the application inserted), where the
    # insert's job joins it: one batch, one row for both.
    conn.execute("DELETE FROM pgmq.q_embedding_jobs_backfill")
    continued = {"target": doc.target, "keys": [1], "attempts": 0, "continued": True}
    conn.execute("SELECT pgmq.send('embedding_jobs', %s)", (Jsonb(continued),))
    conn.execute("DELETE FROM docs WHERE id = 1")
    conn.execute("INSERT INTO docs VALUES (1, %s)", (long_text(40),))
    doc.run_once(piece_tokens=PIECE_TOKENS)
    assert stored_chunks(conn) == doc.expected(long_text(40))
    assert progress(conn) == []


def test_a_document_truncated_and_inserted_again_between_pieces_is_written_whole(
    conn: Conn, doc: LongDocument
) -> None:
    """TRUNCATE empties the chunk table at once (its trigger): the record of the progress goes
    with the chunks, so that the insert's job starts the document over rather than trust
    chunks that are gone."""
    doc.step()
    doc.step()
    assert progress(conn)
    conn.execute("TRUNCATE docs")
    assert progress(conn) == []
    conn.execute("INSERT INTO docs VALUES (1, %s)", (long_text(40),))
    doc.run_once(piece_tokens=PIECE_TOKENS)
    assert stored_chunks(conn) == doc.expected(long_text(40))
    assert progress(conn) == []


def test_two_jobs_of_one_long_document_never_lower_its_progress(
    conn: Conn, doc: LongDocument, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second job for a document half-way through its pieces (watch() again with another
    header, a model change, an edit and its revert queue one): each batch goes on from the
    record of the content's committed chunks, whichever job it came with, and the chain of
    pieces the other job's took over ends. The record only grows, the document completes in
    about as many batches as alone, and nothing is left in the queue."""
    # A batch reads ~2 groups of chunks (stored vectors reused or not): starting over shows.
    monkeypatch.setattr(reading, "MAX_ROUNDS", 2)
    one_at_a_time = dataclasses.replace(doc, settings=doc.settings.with_overrides(batch_size=1))
    expected = doc.expected(long_text(40))
    for _ in range(4):
        one_at_a_time.step()
    ((_, _, done, _),) = progress(conn)
    assert 12 < done < len(expected) - 8  # further than a batch reads
    requeue = {"target": doc.target, "keys": [1]}  # as watch() queues a row again
    conn.execute("SELECT pgmq.send('embedding_jobs_backfill', %s)", (Jsonb(requeue),))
    seen = [done]
    steps = 0
    while messages(conn) and steps < 40:
        one_at_a_time.step()
        steps += 1
        seen += [done for _, _, done, _ in progress(conn)] or [len(expected)]
    assert seen == sorted(seen), f"progress went back: {seen}"
    assert seen[-1] == len(expected) and messages(conn) == []
    assert stored_chunks(conn) == expected
    assert progress(conn) == []
    # As alone (a piece a batch), and one batch for the chain that was taken over.
    assert steps <= len(set(seen)) + 1, seen


def test_a_document_over_the_ceiling_fails_at_once_and_shows(conn: Conn, doc: LongDocument) -> None:
    size = len(long_text(40).encode())
    doc.run_once(max_document_bytes=1000, max_attempts=5)
    ((key, attempts, error),) = conn.execute(
        "SELECT row_key, attempts, last_error FROM embeddings.failures"
    ).fetchall()
    assert key == 1 and attempts == 1  # no retries: the same text would fail again
    assert "over its ceiling" in error and f"{size:,} bytes" in error
    assert "EMBED_MAX_DOCUMENT_BYTES=1,000" in error
    assert conn.execute(
        "SELECT row_key, state, bytes, ceiling_bytes FROM embeddings.document_progress"
    ).fetchall() == [("1", "over_ceiling", size, 1000)]
    assert stored_chunks(conn) == []
    # Raised: the retried job embeds it, and the state goes.
    conn.execute("SELECT embeddings.retry_failures()")
    doc.run_once()
    assert stored_chunks(conn) == doc.expected(long_text(40))
    assert progress(conn) == []


def test_a_deleted_document_forgets_its_progress(conn: Conn, doc: LongDocument) -> None:
    doc.step()
    assert progress(conn)
    conn.execute("DELETE FROM docs WHERE id = 1")
    row = doc.step()
    assert row.state is RowState.GONE
    assert progress(conn) == []


def test_status_and_doctor_show_a_document_in_pieces_and_one_over_the_ceiling(
    conn: Conn, doc: LongDocument
) -> None:
    from worker import status as status_model
    from worker.cli import doctor, status

    doc.step()
    (row,) = status_model.fetch(conn)
    (in_pieces,) = row["documents_in_progress"]
    assert in_pieces["key"] == "1" and 0 < in_pieces["chunks_done"] <= in_pieces["chunks_estimated"]
    shown = "\n".join(status.render([row]))
    assert "docs.embedding: document 1 (" in shown and "embedded in pieces" in shown
    assert f"{in_pieces['chunks_done']}/~{in_pieces['chunks_estimated']} chunks" in shown
    # One piece says nothing of the pace of the others; a second one does: the document's ETA
    # is its chunks left at that pace, and the bar counts its chunks (the rows beside it are few).
    assert row["eta_seconds"] is None and "no pace yet" in shown
    doc.step()
    (row,) = status_model.fetch(conn)
    (in_pieces,) = row["documents_in_progress"]
    share = in_pieces["chunks_done"] / in_pieces["chunks_estimated"]
    assert row["eta_seconds"] is not None and row["eta_seconds"] > 0
    assert "to go" in "\n".join(status.render([row]))
    done, total = status.progress(row, row["total_rows"] - row["cleared_rows"])
    assert done / total == pytest.approx(share, abs=0.01)

    # A ceiling lowered under documents: the one in progress and a new one.
    conn.execute("INSERT INTO docs VALUES (2, %s)", (long_text(10),))
    doc.run_once(max_document_bytes=500, piece_tokens=100_000)
    (row,) = status_model.fetch(conn)
    assert row["documents_over_ceiling"] == 2 and row["documents_in_progress"] == []
    shown = "\n".join(status.render([row]))
    # Shown as a stopped state (sql/52_stopped.sql), which /readyz and the metric read too.
    assert "docs.embedding: stopped (over_ceiling)" in shown
    assert "2 document(s) longer than the ceiling of 500 bytes (EMBED_MAX_DOCUMENT_BYTES)" in shown
    assert conn.execute("SELECT state FROM embeddings.stopped").fetchall() == [("over_ceiling",)]
    findings = doctor.check(doc.dsn, doc.settings)
    (over,) = [f for f in findings if "stopped (over_ceiling)" in f.detail]
    assert over.level == "FAIL" and "failures --retry" in over.fix
