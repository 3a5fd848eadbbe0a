"""Chunked targets: watch(..., chunk_tokens => N) and the worker keeping chunk tables in step,
with the real all-MiniLM-L6-v2 and a real database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.support import stores
from tests.support.in_flight import InFlight
from tests.support.jobs import clear_queue, messages, queued_keys
from tests.support.models import shared_models_dir
from worker.models.loaded import LoadedModels
from worker.pipeline import chunking
from worker.pipeline.batch import RowState
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

PARAGRAPH = (
    "Postgres keeps rows in heap pages and finds them through indexes. A vacuum reclaims the "
    "space of dead row versions, and the planner picks between scans by their estimated cost."
)


def long_text(n: int, marker: str = "") -> str:
    """n paragraphs of ~40 tokens each, the i-th numbered, `marker` appended to the last."""
    parts = [f"Paragraph {i}. {PARAGRAPH}" for i in range(n)]
    parts[-1] += " " + marker
    return "\n\n".join(parts)


def chunks(conn: Conn, table: str = "docs_chunks") -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT id, seq, chunk, chunk_hash, embedding::real[] FROM {table} ORDER BY id, seq"
    ).fetchall()


def watch(conn: Conn, model: str, **options: Any) -> int:
    return stores.watch_with(conn, model=model, **options)


@pytest.fixture
def docs(conn: Conn, minilm: str) -> int:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO docs VALUES (1, %s), (2, %s), (3, 'Short one.'), (4, NULL), (5, '')",
        (long_text(12), long_text(5)),
    )
    return watch(conn, minilm, chunk_tokens=64, chunk_overlap=8)


@pytest.fixture
def embedded_docs(docs: int, run_once: Callable[..., Worker]) -> int:
    """`docs`, embedded by one run of the worker: its target id."""
    run_once()
    return docs


def column_types(conn: Conn, table: str) -> list[tuple[str, str]]:
    return [(name, kind) for name, kind, _ in stores.columns(conn, table)]


# --- SQL interface --------------------------------------------------------------------------------
def test_watch_creates_the_chunk_table_and_no_embedding_column(conn: Conn, docs: int) -> None:
    assert column_types(conn, "docs") == [("id", "bigint"), ("body", "text")]
    assert column_types(conn, "docs_chunks") == [
        ("id", "bigint"),
        ("seq", "integer"),
        ("chunk", "text"),
        ("chunk_hash", "text"),
        ("embedding", "halfvec(384)"),
        ("start_offset", "integer"),
        ("end_offset", "integer"),
        ("headings", "text[]"),
        ("page", "integer"),
    ]
    constraints = stores.constraints(conn, "docs_chunks")
    # No foreign key to the table: it made TRUNCATE of the table fail (deletes are followed up).
    assert constraints == {"p": "PRIMARY KEY (id, seq)"}
    indexes = [
        r[0]
        for r in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'docs_chunks' AND indexdef ~ 'hnsw'"
        )
    ]
    assert len(indexes) == 1 and "halfvec_cosine_ops" in indexes[0]
    registered = conn.execute(
        "SELECT chunk_table::text, chunk_tokens, chunk_overlap, clear_on_update"
        " FROM embeddings.targets WHERE id = %s",
        (docs,),
    ).fetchone()
    assert registered == ("docs_chunks", 64, 8, False)
    # Backfill: the rows with content, not the NULL and empty ones.
    assert sorted(queued_keys(conn, docs)) == [1, 2, 3]


def test_watch_with_fts_turns_full_text_search_on_for_a_chunked_target(
    conn: Conn, minilm: str
) -> None:
    """watch(..., chunk_tokens => N, fts => 'english'), as docs/rag.md starts: the chunk table
    gets its generated tsvector (0.2.0 ignored fts => for chunked targets), then the offsets
    and the documents' heading path and page."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    target = watch(conn, minilm, chunk_tokens=64, fts="english")
    assert conn.execute(
        "SELECT fts_config::text, fts_column FROM embeddings.targets WHERE id = %s", (target,)
    ).fetchone() == ("english", "fts")
    assert [c for c, _ in column_types(conn, "docs_chunks")][-6:] == [
        "embedding",
        "fts",
        "start_offset",
        "end_offset",
        "headings",
        "page",
    ]
    assert watch(conn, minilm, chunk_tokens=64, fts="english") == target  # nothing to do again


@pytest.mark.parametrize("fts_again", [False, True])
def test_a_full_text_chunked_target_moved_to_a_new_chunk_table_keeps_its_full_text(
    conn: Conn, minilm: str, run_once: Callable[..., Worker], fts_again: bool
) -> None:
    """chunk_table => another table: the new table gets the target's tsvector column and GIN
    index too (the target still says fts_config 'english'; 0.3.0 left the new table without
    them, and hybrid_search() failed on `column c.fts does not exist`), whether or not fts =>
    is passed again."""
    conn.execute("CREATE TABLE mv (id int PRIMARY KEY, body text)")
    watch_options: dict[str, Any] = {"chunk_tokens": 64}
    stores.watch_with(conn, "mv", model=minilm, fts="english", **watch_options)
    conn.execute("INSERT INTO mv VALUES (1, 'refunds take fourteen days')")
    again = {"fts": "english"} if fts_again else {}
    stores.watch_with(conn, "mv", model=minilm, chunk_table="mv_chunks2", **watch_options, **again)
    assert "fts" in [c for c, _ in column_types(conn, "mv_chunks2")]
    assert conn.execute(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = 'mv_chunks2'::regclass"
        " AND am.amname = 'gin'"
    ).fetchone() == (1,)
    run_once()
    assert conn.execute(
        "SELECT key FROM embeddings.hybrid_search('mv', 'refund', NULL, 3)"
    ).fetchall() == [(1,)]


def test_watch_is_idempotent_and_re_watch_with_new_settings_re_queues(
    conn: Conn, docs: int, minilm: str
) -> None:
    clear_queue(conn)
    assert watch(conn, minilm, chunk_tokens=64, chunk_overlap=8) == docs
    assert messages(conn) == []
    assert watch(conn, minilm, chunk_tokens=100, chunk_overlap=8) == docs
    assert sorted(queued_keys(conn, docs)) == [1, 2, 3]


def test_default_overlap_and_named_chunk_table(conn: Conn, minilm: str) -> None:
    conn.execute("CREATE SCHEMA rag")
    conn.execute("CREATE TABLE docs (id text PRIMARY KEY, body text)")
    watch(conn, minilm, chunk_tokens=200, chunk_table="rag.pieces")
    assert conn.execute(
        "SELECT chunk_table::text, chunk_overlap FROM embeddings.targets"
    ).fetchone() == ("rag.pieces", 20)
    assert column_types(conn, "rag.pieces")[0] == ("id", "text")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chunk_tokens": 255}, "chunk_tokens must be between 8 and 254"),
        ({"chunk_tokens": 4}, "chunk_tokens must be between 8"),
        ({"chunk_tokens": 100, "chunk_overlap": 60}, "chunk_overlap must be between 0 and half"),
        ({"chunk_overlap": 10}, "need chunk_tokens"),
        ({"chunk_tokens": 100, "chunk_table": "a.b.c"}, "invalid chunk_table"),
        # (the old chunks keep their vectors until the new ones land, for reuse: not ignored)
        ({"chunk_tokens": 100, "clear_on_update": True}, "clear_on_update => true is for store"),
    ],
)
def test_invalid_chunk_settings_are_refused(
    conn: Conn, minilm: str, options: dict[str, Any], message: str
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    with pytest.raises(psycopg.Error, match=message):
        watch(conn, minilm, **options)


def test_a_row_target_cannot_silently_become_chunked_or_back(conn: Conn, minilm: str) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    watch(conn, minilm)
    with pytest.raises(psycopg.Error, match="one vector per row"):
        watch(conn, minilm, chunk_tokens=100)
    conn.execute("SELECT embeddings.unwatch('docs')")
    conn.execute("ALTER TABLE docs DROP COLUMN embedding")
    watch(conn, minilm, chunk_tokens=100)
    with pytest.raises(psycopg.Error, match="pass chunk_tokens"):
        watch(conn, minilm)


def test_an_existing_table_watch_did_not_make_is_refused(conn: Conn, minilm: str) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE docs_chunks (id bigint, seq integer, chunk text)")
    with pytest.raises(psycopg.errors.DuplicateTable, match="embed-worker did not make it"):
        watch(conn, minilm, chunk_tokens=100)


def test_triggers_queue_inserts_and_content_changes_only(conn: Conn, docs: int) -> None:
    clear_queue(conn)
    conn.execute("INSERT INTO docs VALUES (10, 'new'), (11, NULL)")
    conn.execute("UPDATE docs SET body = body WHERE id = 1")  # same content: nothing
    conn.execute("UPDATE docs SET body = 'changed' WHERE id = 2")
    assert queued_keys(conn, docs) == [10, 2]


def test_insert_with_a_raising_content_function_still_succeeds(conn: Conn, minilm: str) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE plpgsql STABLE AS"
        " $$ BEGIN IF d.id = 13 THEN RAISE 'bad row'; END IF; RETURN d.body; END $$"
    )
    target = stores.watch_with(conn, "docs", "doc_text", model=minilm, chunk_tokens=50)
    conn.execute("INSERT INTO docs VALUES (12, 'fine'), (13, 'boom')")
    assert sorted(queued_keys(conn, target)) == [12, 13]


# --- the worker -------------------------------------------------------------------------------------
@pytest.mark.usefixtures("embedded_docs")
def test_documents_are_chunked_within_budget_covering_the_text(
    conn: Conn, embedders: LoadedModels, minilm: str
) -> None:
    rows = chunks(conn)
    splitter = chunking.Splitter.from_file(shared_models_dir() / minilm / "tokenizer.json", 64, 8)
    bodies = dict(conn.execute("SELECT id, body FROM docs").fetchall())
    for key in (1, 2, 3):
        mine = [r for r in rows if r[0] == key]
        expected = splitter.split(bodies[key])
        assert [r[2] for r in mine] == [c.text for c in expected]
        assert [r[1] for r in mine] == list(range(len(expected)))
        assert all(r[2] in bodies[key] for r in mine)
    assert len([r for r in rows if r[0] == 1]) > 5
    assert not [r for r in rows if r[0] in (4, 5)]
    # Each stored vector is the model's vector of exactly that chunk's text.
    model = embedders.get(minilm)
    expected_vectors = model.embed([r[2] for r in rows])
    for r, v in zip(rows, expected_vectors, strict=True):
        assert float(np.dot(np.array(r[4]), v)) > 0.999
    assert messages(conn) == []
    status = conn.execute(
        "SELECT total_rows, embedded_rows, chunks, pending_jobs, failed_jobs FROM embeddings.status"
    ).fetchone()
    assert status == (5, 3, len(rows), 0, 0)


def test_an_edit_re_embeds_only_the_changed_chunks(
    conn: Conn, docs: int, run_once: Callable[..., Worker], embedded_texts: list[str]
) -> None:
    run_once()
    before = {(r[0], r[3]): r[4] for r in chunks(conn)}
    (body,) = conn.execute("SELECT body FROM docs WHERE id = 1").fetchall()[0]
    edited = body.replace("Paragraph 6.", "Paragraph six, rewritten with other words entirely.")
    conn.execute("UPDATE docs SET body = %s WHERE id = 1", (edited,))
    embedded_texts.clear()
    run_once()
    mine = [r for r in chunks(conn) if r[0] == 1]
    new = [r[2] for r in mine if (1, r[3]) not in before]
    assert 0 < len(new) <= 3, "only the chunks around the edit are new"
    assert any("rewritten" in text for text in new)
    assert sorted(embedded_texts) == sorted(new)  # and only they went through the model
    for r in mine:
        if (1, r[3]) in before:
            assert r[4] == before[(1, r[3])]  # the very same vector


@pytest.mark.usefixtures("embedded_docs")
def test_a_shorter_document_loses_its_vanished_chunks_and_blank_clears_all(
    conn: Conn, run_once: Callable[..., Worker]
) -> None:
    many = len([r for r in chunks(conn) if r[0] == 1])
    conn.execute("UPDATE docs SET body = %s WHERE id = 1", (long_text(2),))
    conn.execute("UPDATE docs SET body = '   ' WHERE id = 2")
    run_once()
    rows = chunks(conn)
    assert 0 < len([r for r in rows if r[0] == 1]) < many
    assert [r[1] for r in rows if r[0] == 1] == list(range(len([r for r in rows if r[0] == 1])))
    assert not [r for r in rows if r[0] == 2]
    assert messages(conn) == []


def test_deleting_a_document_deletes_its_chunks(
    conn: Conn, embedded_docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute("DELETE FROM docs WHERE id = 1")
    # Never returned, nor counted, from the delete on; the worker deletes them (the delete
    # queued the key).
    found = conn.execute(
        "SELECT DISTINCT key FROM embeddings.match_chunks('docs', (SELECT embedding FROM docs_chunks"
        " WHERE id = 1 LIMIT 1), 40)"
    ).fetchall()
    assert ("1",) not in [(str(k),) for (k,) in found]
    assert queued_keys(conn, embedded_docs) == [1]
    run_once()
    assert not [r for r in chunks(conn) if r[0] == 1]
    assert messages(conn) == []


@pytest.mark.usefixtures("embedded_docs")
def test_truncate_of_a_chunked_target_empties_its_chunk_table(conn: Conn) -> None:
    """It failed on the chunk table's foreign key (issue 25 §4)."""
    assert chunks(conn)
    conn.execute("TRUNCATE docs")
    assert chunks(conn) == []


def test_a_document_updated_while_in_flight_keeps_the_newest_contents_chunks(
    conn: Conn, docs: int, run_once: Callable[..., Worker], in_flight: InFlight
) -> None:
    batch, queue = in_flight.lease()
    conn.execute("UPDATE docs SET body = 'The newest content.' WHERE id = 3")
    in_flight.finish(batch, queue)
    assert batch.rows[(docs, "3")].state is RowState.STALE
    assert not [r for r in chunks(conn) if r[0] == 3]  # the stale text was not written
    run_once()
    assert [r[2] for r in chunks(conn) if r[0] == 3] == ["The newest content."]


def test_a_batch_over_the_chunk_budget_postpones_documents_without_an_attempt(
    conn: Conn,
    docs: int,
    run_once: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
    in_flight: InFlight,
) -> None:
    monkeypatch.setattr("worker.pipeline.pieces.MAX_CHUNKS", 3)
    batch, queue = in_flight.lease()
    states = {key: row.state for (_, key), row in batch.rows.items()}
    assert states["1"] is RowState.READY  # the first always gets a piece
    first = batch.rows[(docs, "1")].chunks
    assert first is not None and len(first.chunks) == 3 and not first.final
    assert states["2"] is RowState.POSTPONED
    in_flight.finish(batch, queue)
    assert batch.rows[(docs, "1")].state is RowState.PIECE
    assert sorted(queued_keys(conn, docs)) == [1, 2, 3]
    assert {m["attempts"] for m in messages(conn)} == {0}
    run_once()
    assert sorted({r[0] for r in chunks(conn)}) == [1, 2, 3]
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM embeddings.documents").fetchone() == (0,)


def test_a_document_the_model_fails_on_fails_alone(
    conn: Conn, docs: int, run_once: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.models.embedder import Embedder

    original = Embedder.embed_with_stats

    def picky(self: Embedder, texts: Any) -> Any:
        if any("Short one" in t for t in texts):
            raise RuntimeError("cannot embed this")
        return original(self, texts)

    monkeypatch.setattr(Embedder, "embed_with_stats", picky)
    run_once(max_attempts=1)
    assert sorted({r[0] for r in chunks(conn)}) == [1, 2]
    failures = conn.execute("SELECT row_key, last_error FROM embeddings.failures").fetchall()
    assert failures == [(3, "embedding failed: RuntimeError: cannot embed this")]
    monkeypatch.setattr(Embedder, "embed_with_stats", original)
    assert conn.execute("SELECT embeddings.retry_failures()").fetchone() == (1,)
    run_once()
    assert sorted({r[0] for r in chunks(conn)}) == [1, 2, 3]


def test_sweep_queues_documents_without_chunks(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    stores.assert_sweep_restores(conn, run_once, docs, "docs_chunks", "id = 2", 2)
    assert {r[0] for r in chunks(conn)} == {1, 2, 3}


def test_supabase_shaped_jobs_work_for_chunked_targets(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute("CREATE TABLE documents (id int PRIMARY KEY, title text, content text)")
    conn.execute(
        "CREATE FUNCTION embedding_input(doc documents) RETURNS text LANGUAGE sql IMMUTABLE"
        " RETURN '# ' || doc.title || E'\\n\\n' || doc.content"
    )
    conn.execute("INSERT INTO documents VALUES (1, 'Cats', %s)", (long_text(6),))
    conn.execute(
        "SELECT embeddings.watch('documents', 'embedding_input', model => %s, triggers => false,"
        " chunk_tokens => 64)",
        (minilm,),
    )
    clear_queue(conn)
    conn.execute(
        "SELECT pgmq.send('embedding_jobs', jsonb_build_object('id', 1, 'schema', 'public',"
        " 'table', 'documents', 'contentFunction', 'embedding_input', 'embeddingColumn', 'embedding'))"
    )
    run_once()
    first = conn.execute(
        "SELECT chunk FROM documents_chunks WHERE id = 1 ORDER BY seq LIMIT 1"
    ).fetchone()
    assert first is not None and first[0].startswith("# Cats")
    assert messages(conn) == []


@pytest.mark.usefixtures("embedded_docs")
def test_match_chunks_returns_nearest_chunks_with_their_document_key(
    conn: Conn, embedders: LoadedModels, minilm: str
) -> None:
    (query,) = embedders.get(minilm).embed(["Short one."])
    found = conn.execute(
        "SELECT key, seq, chunk, distance FROM embeddings.match_chunks('docs', %s::halfvec, 3)",
        (str(list(map(float, query))),),
    ).fetchall()
    assert found[0][:3] == (3, 0, "Short one.")
    assert found[0][3] < 0.01
    assert [f[3] for f in found] == sorted(f[3] for f in found)
    conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
    with pytest.raises(psycopg.Error, match="not watched in chunks"):
        conn.execute(
            "SELECT * FROM embeddings.match_chunks('other', %s::halfvec, 3)",
            (str(list(map(float, query))),),
        )
    # As search(): no k, or a NULL query, is an error (not nothing, or chunks in no order).
    for k in ("0", "NULL"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="k must be at least 1"):
            conn.execute(
                f"SELECT * FROM embeddings.match_chunks('docs', %s::halfvec, {k})",
                (str(list(map(float, query))),),
            )
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="query must not be NULL"):
        conn.execute("SELECT * FROM embeddings.match_chunks('docs', NULL, 3)")


def test_dropping_the_chunk_table_forgets_the_target(conn: Conn, docs: int) -> None:
    conn.execute("DROP TABLE docs_chunks")
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (0,)


def multibyte_text(n: int) -> str:
    """n paragraphs with characters of two, three and four bytes in UTF-8 (one of them beyond
    U+FFFF) and accents the tokenizer's normalizer strips: character offsets differ from byte
    offsets after the first paragraph."""
    parts = [
        f"Paragraph {i}: the naïve café’s Größe — 東京の図書館 🐘 keeps its ledgers. {PARAGRAPH}"
        for i in range(n)
    ]
    return "\n\n".join(parts)


def offsets_slice(conn: Conn) -> list[tuple[Any, ...]]:
    """Chunks whose offsets do not slice their document to exactly their text, in SQL."""
    return conn.execute(
        "SELECT c.id, c.seq FROM docs_chunks c JOIN docs d ON d.id = c.id"
        " WHERE substr(d.body, c.start_offset + 1, c.end_offset - c.start_offset)"
        " IS DISTINCT FROM c.chunk"
    ).fetchall()


def test_chunk_offsets_slice_the_document_multibyte_characters_included(
    conn: Conn, docs: int, run_once: Callable[..., Worker], embedders: LoadedModels, minilm: str
) -> None:
    body = multibyte_text(8)
    conn.execute("INSERT INTO docs VALUES (6, %s)", (body,))
    run_once()
    rows = conn.execute(
        "SELECT seq, chunk, start_offset, end_offset FROM docs_chunks WHERE id = 6 ORDER BY seq"
    ).fetchall()
    assert len(rows) > 3
    for _, chunk, start, end in rows:
        assert body[start:end] == chunk
    # Characters, not bytes: past the first paragraph the two differ.
    assert any(len(body[:start].encode()) != start for _, _, start, _ in rows)
    assert offsets_slice(conn) == []
    assert conn.execute(
        "SELECT count(*) FROM docs_chunks WHERE start_offset IS NULL OR end_offset IS NULL"
    ).fetchone() == (0,)

    # The first paragraph made longer: the chunks after it keep their text, place (seq) and
    # vector, and their offsets move (the chunk write updates them alone).
    edited = body.replace("the naïve", "the very naïve", 1)
    conn.execute("UPDATE docs SET body = %s WHERE id = 6", (edited,))
    run_once()
    moved = conn.execute(
        "SELECT seq, chunk, start_offset, end_offset FROM docs_chunks WHERE id = 6 ORDER BY seq"
    ).fetchall()
    kept = {(r[0], r[1]): r[2] for r in rows}
    assert [r for r in moved if (r[0], r[1]) in kept and kept[(r[0], r[1])] != r[2]], (
        "some chunks kept their text and place but moved"
    )
    for _, chunk, start, end in moved:
        assert edited[start:end] == chunk
    assert offsets_slice(conn) == []
    # Chunks written before 0.3.0 have none until their document is embedded again; then all
    # of its chunks get them, those whose vector is reused included.
    conn.execute("UPDATE docs_chunks SET start_offset = NULL, end_offset = NULL WHERE id = 1")
    conn.execute("UPDATE docs SET body = body || ' One more sentence.' WHERE id = 1")
    run_once()
    assert conn.execute(
        "SELECT count(*) FROM docs_chunks WHERE start_offset IS NULL OR end_offset IS NULL"
    ).fetchone() == (0,)
    assert offsets_slice(conn) == []

    # The SQL functions return them with the best chunk of each document.
    (query,) = embedders.get(minilm).embed(["the café’s ledgers in the Tokyo library"])
    vector = str(list(map(float, query)))
    bodies = dict(conn.execute("SELECT id, body FROM docs").fetchall())

    def assert_best_is_6_with_its_offsets(search: str) -> None:
        found = conn.execute(
            f"SELECT key, content, start_offset, end_offset FROM embeddings.{search}", (vector,)
        ).fetchall()
        assert found[0][0] == 6
        for key, content, start, end in found:
            assert bodies[key][start:end] == content

    assert_best_is_6_with_its_offsets("search('docs', %s::halfvec, 3)")
    conn.execute("SELECT embeddings.enable_fts('docs')")
    assert_best_is_6_with_its_offsets("hybrid_search('docs', 'ledgers', %s::halfvec, 3)")
