"""Side tables: watch(..., store => 'side') keeps a target's vectors in a table of their own,
keyed like the watched table (sql/56_side.sql), with the real all-MiniLM-L6-v2 and a real
database. What every store does alike is tested once per store where it is tested (the fault
matrix, the schema-change matrix, the stateful test, the worker's and the model change's tests:
tests/support/stores.py); here, what is the side table's own."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.integration.conftest import WIDE, WIDE_DIMS
from tests.integration.test_worker import TEXTS
from tests.support import stores
from tests.support.in_flight import InFlight, stop_worker
from tests.support.jobs import clear_queue, messages, queued_keys
from tests.support.process import run_cli, wait_for
from tests.support.stores import STORES, vectors
from worker import schema
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import faults
from worker.pipeline.batch import RowState
from worker.process.runner import Worker
from worker.retrieval import search
from worker.retrieval.request import SearchRequest

Conn = psycopg.Connection[Any]


def side_rows(conn: Conn, table: str = "docs_embeddings") -> dict[Any, tuple[str, Any]]:
    return {
        r[0]: (r[1], r[2])
        for r in conn.execute(f"SELECT id, content_md5, embedding::real[] FROM {table} ORDER BY id")
    }


def watch(conn: Conn, model: str, table: str = "docs", **options: Any) -> int:
    return stores.watch_with(conn, table, model=model, store="side", **options)


@pytest.fixture
def docs(conn: Conn, minilm: str) -> int:
    stores.texts_table(conn, TEXTS, "id bigint PRIMARY KEY, body text, updated_at timestamptz")
    return watch(conn, minilm)


# --- the side table -------------------------------------------------------------------------------
def test_watch_makes_a_side_table_keyed_exactly_like_the_table(conn: Conn, minilm: str) -> None:
    conn.execute(
        "CREATE COLLATION IF NOT EXISTS nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
    )
    conn.execute(
        "CREATE TABLE orders (region char(4), amount numeric(12, 3), code varchar(10) COLLATE nocase,"
        " body text, PRIMARY KEY (region, amount, code))"
    )
    conn.execute("INSERT INTO orders VALUES ('eu', 1.5, 'a', 'first'), ('us', 2, 'B', 'second')")
    target = watch(conn, minilm, table="orders")
    assert stores.columns(conn, "orders_embeddings") == [
        ("region", "character(4)", True),
        ("amount", "numeric(12,3)", True),
        ("code", "character varying(10)", True),
        ("embedding", "halfvec(384)", False),
        ("content_md5", "text", True),
    ]
    assert conn.execute(
        "SELECT collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation"
        " WHERE attrelid = 'orders_embeddings'::regclass AND attname = 'code'"
    ).fetchone() == ("nocase",)
    # Its primary key is the table's key, in key order; no foreign key; an HNSW index.
    constraints = stores.constraints(conn, "orders_embeddings")
    assert constraints == {"p": "PRIMARY KEY (region, amount, code)"}
    assert conn.execute(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders_embeddings'"
        " AND indexdef ~ 'hnsw' AND indexdef ~ 'halfvec_cosine_ops'"
    ).fetchone() == (1,)
    # The table's owner's; the table gets no embedding column.
    assert conn.execute(
        "SELECT (SELECT relowner FROM pg_class WHERE oid = 'orders'::regclass)"
        " = (SELECT relowner FROM pg_class WHERE oid = 'orders_embeddings'::regclass)"
    ).fetchone() == (True,)
    assert [c[0] for c in stores.columns(conn, "orders")] == ["region", "amount", "code", "body"]
    assert conn.execute(
        "SELECT side_table::text, embedding_attnum, clear_on_update FROM embeddings.targets"
        " WHERE id = %s",
        (target,),
    ).fetchone() == ("orders_embeddings", None, False)
    # Every row with content is queued; watch() again with the same arguments changes nothing.
    assert len(queued_keys(conn, target)) == 2
    clear_queue(conn)
    assert watch(conn, minilm, table="orders") == target
    assert messages(conn) == []


def test_a_named_side_table_and_a_second_target(conn: Conn, minilm: str) -> None:
    conn.execute("CREATE SCHEMA vectors")
    conn.execute("CREATE TABLE docs (id text PRIMARY KEY, body text, title text)")
    watch(conn, minilm, side_table="vectors.doc_vectors")
    conn.execute(
        "SELECT embeddings.watch('docs', 'title', embedding_column => 'title_embedding',"
        " model => %s, store => 'side')",
        (minilm,),
    )
    assert conn.execute(
        "SELECT embedding_column, side_table::text FROM embeddings.targets ORDER BY id"
    ).fetchall() == [
        ("embedding", "vectors.doc_vectors"),
        ("title_embedding", "docs_title_embedding"),
    ]
    assert stores.columns(conn, "docs_title_embedding")[1][0] == "title_embedding"


def test_the_store_changes_only_through_unwatch(conn: Conn, minilm: str) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE papers (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (minilm,))
    watch(conn, minilm)
    refused = {
        "SELECT embeddings.watch('docs', 'body', store => 'row')": "in a side table, not in the table's own column",
        "SELECT embeddings.watch('notes', 'body', store => 'side')": "in the table's own column, not in a side table",
        "SELECT embeddings.watch('docs', 'body', store => 'column')": 'invalid store "column"',
        "SELECT embeddings.watch('docs', 'body', store => 'row', side_table => 'x')": "side_table is for store => 'side'",
        "SELECT embeddings.watch('docs', 'body', side_table => 'elsewhere')": "keeps its vectors in public.docs_embeddings, not",
        "SELECT embeddings.watch('docs', 'body', store => 'side', chunk_tokens => 100)": "not for chunked targets",
        "SELECT embeddings.watch('papers', 'body', side_table => 'docs')": "is a watched table",
        "SELECT embeddings.watch('papers', 'body', side_table => 'docs_embeddings')": "holds the vectors of another",
    }
    for statement, message in refused.items():
        with pytest.raises(psycopg.Error, match=message):
            conn.execute(statement)
    # With the store left out, watch() again keeps it.
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    assert conn.execute(
        "SELECT side_table::text FROM embeddings.targets ORDER BY id"
    ).fetchall() == [
        (None,),
        ("docs_embeddings",),
    ]
    conn.execute("SELECT embeddings.unwatch('docs')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    assert ("embedding", "halfvec(384)", False) in stores.columns(conn, "docs")


def test_clear_on_update_is_refused_for_a_side_table_not_ignored(conn: Conn, minilm: str) -> None:
    """Clearing a side table's stale vector at once would write the side table in the
    application's transaction: what the side table exists to avoid. Asked for, it is refused
    (it was silently ignored); left out, each store gets its own default."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text)")
    for statement in (
        "SELECT embeddings.watch('docs', 'body', store => 'side', clear_on_update => true)",
        "SELECT embeddings.watch('docs', 'body', side_table => 'vectors', clear_on_update => true)",
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
            conn.execute(statement)
        assert "clear_on_update => true is for store => 'row'" in str(refused.value)
        assert refused.value.diag.message_hint is not None
        assert "clear_on_update => false" in refused.value.diag.message_hint
    assert to_regclass(conn, "docs_embeddings") is None  # all or nothing
    watch(conn, minilm)
    watch(conn, minilm, clear_on_update=False)
    # A side target watched again, its store left out, is refused too.
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="clear_on_update"):
        conn.execute("SELECT embeddings.watch('docs', 'body', clear_on_update => true)")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (minilm,))
    assert conn.execute(
        "SELECT source::text, clear_on_update FROM embeddings.targets ORDER BY id"
    ).fetchall() == [("docs", False), ("notes", True)]


def to_regclass(conn: Conn, name: str) -> Any:
    row = conn.execute("SELECT to_regclass(%s)::text", (name,)).fetchone()
    assert row is not None
    return row[0]


def test_an_existing_table_watch_did_not_make_is_refused(conn: Conn, minilm: str) -> None:
    """Whatever its shape (tests/security/test_squatters.py: the right one, with a trigger)."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE docs_embeddings (id integer PRIMARY KEY, embedding halfvec(384))")
    with pytest.raises(psycopg.errors.DuplicateTable, match=r"embed-worker did not make it"):
        watch(conn, minilm)


def test_a_side_table_watch_made_and_someone_reshaped_is_refused(
    conn: Conn, docs: int, minilm: str
) -> None:
    conn.execute("SELECT embeddings.unwatch('docs')")
    conn.execute("ALTER TABLE docs_embeddings DROP COLUMN content_md5")
    with pytest.raises(psycopg.Error, match=r"not a side table for public.docs .*text content_md5"):
        watch(conn, minilm)


# --- the worker -----------------------------------------------------------------------------------
def test_rows_are_embedded_into_the_side_table_with_their_content_md5(
    conn: Conn, docs: int, run_once: Callable[..., Worker], embedders: LoadedModels, minilm: str
) -> None:
    run_once()
    stored = side_rows(conn)
    expected = embedders.get(minilm).embed(list(TEXTS.values()))
    for (key, text), want in zip(TEXTS.items(), expected, strict=True):
        digest, vector = stored[key]
        assert digest == conn.execute("SELECT md5(%s)", (text,)).fetchone()[0]  # type: ignore[index]
        assert np.allclose(np.array(vector, dtype=np.float32), want, atol=2e-3)
    assert conn.execute(
        "SELECT total_rows, embedded_rows, pending_jobs, failed_jobs FROM embeddings.status_exact"
    ).fetchone() == (4, 4, 0, 0)
    # Content changes re-embed (the old vector stays until then); blank content drops the side row.
    conn.execute(
        "UPDATE docs SET body = 'Completely different words about the ocean.' WHERE id = 3"
    )
    assert side_rows(conn)[3] == stored[3]
    conn.execute("UPDATE docs SET body = '  ' WHERE id = 4")
    run_once()
    after = side_rows(conn)
    assert sorted(after) == [1, 2, 3] and after[1] == stored[1]
    assert np.allclose(
        np.array(after[3][1], dtype=np.float32),
        embedders.get(minilm).embed(["Completely different words about the ocean."])[0],
        atol=2e-3,
    )
    assert conn.execute(
        "SELECT total_rows, embedded_rows, cleared_rows FROM embeddings.status_exact"
    ).fetchone() == (4, 3, 1)


def test_key_and_vector_columns_named_like_the_write_functions_parameters(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    """The side table's columns are named as the source's: its write functions' parameters
    (keys, k0, vectors, digests) must not be taken for them (every write failed as ambiguous)."""
    conn.execute("CREATE TABLE docs (keys text, k0 integer, body text, PRIMARY KEY (keys, k0))")
    conn.execute("INSERT INTO docs VALUES ('a', 1, 'alpha'), ('b', 2, 'beta'), ('c', 3, 'gamma')")
    watch(conn, minilm, embedding_column="vectors")
    run_once(max_attempts=1)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    current = (
        "SELECT count(*) FROM docs d JOIN docs_vectors s USING (keys, k0)"
        " WHERE s.vectors IS NOT NULL AND s.content_md5 = md5(d.body)"
    )
    assert conn.execute(current).fetchone() == (3,)
    conn.execute("UPDATE docs SET body = body || ' again' WHERE k0 < 3")
    conn.execute("UPDATE docs SET body = '' WHERE k0 = 3")
    run_once(max_attempts=1)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert conn.execute(current).fetchone() == (2,)
    assert conn.execute("SELECT count(*) FROM docs_vectors").fetchone() == (2,)


@pytest.mark.parametrize("store", STORES)
def test_only_the_in_row_store_fires_the_applications_update_triggers(
    conn: Conn, minilm: str, store: str, run_once: Callable[..., Worker]
) -> None:
    """An `updated_at` trigger and an audit log: the worker's vector write is an UPDATE of the
    row in the row store (both fire), and touches no row of the table in the side store."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text, updated_at timestamptz)")
    conn.execute("CREATE TABLE audit (id bigint, at timestamptz DEFAULT clock_timestamp())")
    conn.execute(
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN NEW.updated_at := clock_timestamp(); INSERT INTO audit (id) VALUES (NEW.id);"
        " RETURN NEW; END $$"
    )
    conn.execute("CREATE TRIGGER touch BEFORE UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION touch()")
    conn.execute("INSERT INTO docs (id, body) SELECT g, 'text ' || g FROM generate_series(1, 5) g")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, store => %s)", (minilm, store)
    )
    run_once()
    assert conn.execute(
        f"SELECT count(embedding) FROM {vectors(conn, store).as_string(conn)}"
    ).fetchone() == (5,)
    fired = conn.execute(
        "SELECT count(*), count(updated_at) FROM audit, docs WHERE audit.id = docs.id"
    ).fetchone()
    assert fired == ((5, 5) if store == "row" else (0, 0))


def test_deleted_rows_are_never_returned_and_their_side_rows_follow(
    conn: Conn, docs: int, run_once: Callable[..., Worker], dsn: str
) -> None:
    run_once()
    conn.execute("DELETE FROM docs WHERE id IN (1, 2)")
    conn.execute("UPDATE docs SET id = 30 WHERE id = 3")  # a key change: the old key's row is gone
    # Before the worker follows up: neither search nor status sees the side rows of gone rows.
    assert sorted(side_rows(conn)) == [1, 2, 3, 4]
    assert conn.execute(
        "SELECT total_rows, embedded_rows FROM embeddings.status_exact"
    ).fetchone() == (2, 1)
    found = run_cli("search", "docs", TEXTS[1], "-k", "5", "--json", "--database-url", dsn)
    assert found.returncode == 0, found.stderr
    assert sorted(r["key"] for r in json.loads(found.stdout)) == [4]
    # The deletes and the old key were queued; the worker deletes those side rows.
    assert sorted(queued_keys(conn, docs)) == [1, 2, 3, 30]
    run_once()
    assert sorted(side_rows(conn)) == [4, 30]
    assert conn.execute(
        "SELECT total_rows, embedded_rows, pending_jobs FROM embeddings.status_exact"
    ).fetchone() == (2, 2, 0)


def test_a_row_deleted_and_inserted_again_gets_the_vector_of_its_new_content(
    conn: Conn, docs: int, run_once: Callable[..., Worker], embedders: LoadedModels, minilm: str
) -> None:
    run_once()
    conn.execute("DELETE FROM docs WHERE id = 1")
    conn.execute("INSERT INTO docs (id, body) VALUES (1, 'Rockets again, and fuel.')")
    run_once()
    assert np.allclose(
        np.array(side_rows(conn)[1][1], dtype=np.float32),
        embedders.get(minilm).embed(["Rockets again, and fuel."])[0],
        atol=2e-3,
    )


def test_truncate_empties_the_side_table(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    run_once()
    conn.execute("BEGIN")
    conn.execute("TRUNCATE docs")
    assert side_rows(conn) == {}
    conn.execute("ROLLBACK")  # in the same transaction as the TRUNCATE
    assert len(side_rows(conn)) == 4
    conn.execute("TRUNCATE docs")
    assert side_rows(conn) == {}
    assert conn.execute("SELECT embedded_rows FROM embeddings.status_exact").fetchone() == (0,)


def test_truncating_one_partition_drops_its_side_rows_only(
    conn: Conn, minilm: str, run_once: Callable[..., Worker]
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE docs_low PARTITION OF docs FOR VALUES FROM (0) TO (100)")
    conn.execute("CREATE TABLE docs_high PARTITION OF docs FOR VALUES FROM (100) TO (200)")
    conn.execute("INSERT INTO docs SELECT g, 'text ' || g FROM generate_series(90, 110) g")
    watch(conn, minilm)
    run_once()
    assert len(side_rows(conn)) == 21
    conn.execute("TRUNCATE docs_low")
    assert sorted(side_rows(conn)) == list(range(100, 111))
    conn.execute("DELETE FROM docs_high WHERE id > 105")  # through the partition: followed too
    run_once()
    assert sorted(side_rows(conn)) == list(range(100, 106))
    conn.execute("TRUNCATE docs")
    assert side_rows(conn) == {}


def test_a_row_updated_while_in_flight_keeps_the_newest_contents_vector(
    conn: Conn, docs: int, run_once: Callable[..., Worker], minilm: str, in_flight: InFlight
) -> None:
    batch, queue = in_flight.lease()
    conn.execute("UPDATE docs SET body = 'The newest content.' WHERE id = 3")
    conn.execute("DELETE FROM docs WHERE id = 4")
    in_flight.finish(batch, queue)
    assert batch.rows[(docs, "3")].state is RowState.STALE
    assert sorted(side_rows(conn)) == [1, 2]  # no vector of the old text, none of a deleted row
    run_once()
    assert sorted(side_rows(conn)) == [1, 2, 3]
    assert np.allclose(
        np.array(side_rows(conn)[3][1], dtype=np.float32),
        in_flight.embedders.get(minilm).embed(["The newest content."])[0],
        atol=2e-3,
    )


def test_a_side_table_write_holds_its_rows_until_commit(
    conn: Conn, dsn: str, docs: int, run_once: Callable[..., Worker]
) -> None:
    """Two writers of one row are ordered from the md5 check to COMMIT (an upsert has no row
    lock before it writes): another writer of any of its rows waits (sql/41_locks.sql), and no
    advisory lock, which any login could take, is held."""
    held: list[int] = []
    advisory: list[Any] = []

    def look() -> None:
        waited = 0
        for key in ("1", "2", "3", "4"):
            with psycopg.connect(dsn) as other:
                other.execute("SET lock_timeout = '50ms'")
                try:
                    other.execute(
                        "SELECT embeddings_internal.lock_documents(%s, ARRAY[%s])", (docs, key)
                    )
                except psycopg.errors.LockNotAvailable:
                    waited += 1
        held.append(waited)
        advisory.append(
            conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        )

    with faults.injected("before_commit", look):
        run_once()
    assert held == [4]
    assert advisory == [(0,)]
    with psycopg.connect(dsn) as other:  # and none once it committed
        other.execute("SET lock_timeout = '50ms'")
        other.execute(
            "SELECT embeddings_internal.lock_documents(%s, ARRAY['1', '2', '3', '4'])", (docs,)
        )


def test_unwatch_keeps_the_side_table_and_watch_again_uses_it(
    conn: Conn, docs: int, run_once: Callable[..., Worker], minilm: str
) -> None:
    run_once()
    conn.execute("SELECT embeddings.unwatch('docs')")
    assert len(side_rows(conn)) == 4
    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND NOT tgisinternal"
    ).fetchone() == (0,)
    clear_queue(conn)
    target = watch(conn, minilm)
    assert messages(conn) == []  # every row has its vector there
    conn.execute("DROP TABLE docs_embeddings")  # dropping the side table forgets the target
    assert conn.execute(
        "SELECT count(*) FROM embeddings.targets WHERE id = %s", (target,)
    ).fetchone() == (0,)


def test_sweep_queues_rows_whose_side_row_is_missing(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    stores.assert_sweep_restores(conn, run_once, docs, "docs_embeddings", "id = 2", 2)
    assert sorted(side_rows(conn)) == [1, 2, 3, 4]


def test_uninstall_keeps_the_side_table(
    conn: Conn, docs: int, dsn: str, run_once: Callable[..., Worker]
) -> None:
    run_once()
    with psycopg.connect(dsn, autocommit=True) as admin:
        schema.uninstall(admin)
    assert len(side_rows(conn)) == 4
    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND NOT tgisinternal"
    ).fetchone() == (0,)


def is_embedded(conn: Conn, store: str, key: int) -> bool:
    return stores.embedded(conn, store).get(key, False)


# --- the application's transactions -----------------------------------------------------------
@pytest.fixture
def running_worker(settings: Settings, embedders: LoadedModels) -> Iterator[Worker]:
    """An in-process worker (not --once) in a thread, stopped at the end of the test."""
    worker = Worker(settings, embedders=embedders, progress=False, handle_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.started.wait(60), "the worker did not start"
    yield worker
    stop_worker(worker, thread)


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize("store", STORES)
def test_application_transactions_at_repeatable_read_and_serializable(
    conn: Conn, dsn: str, minilm: str, store: str, isolation: str, running_worker: Worker
) -> None:
    """Issue 24 §3: an application transaction reads a row, the worker embeds it meanwhile, the
    transaction then updates the row. With the vector written into the row that is a concurrent
    update of it: every such transaction fails with a serialization error. With a side table the
    worker writes no row of the table: none fails."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text, note text)")
    target = conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, store => %s)", (minilm, store)
    ).fetchone()
    assert target is not None
    failures = 0
    for i in range(20):
        with psycopg.connect(dsn) as gate, psycopg.connect(dsn) as app:
            # The worker's write waits for the registration (embeddings_internal.lock_target) until the
            # application's transaction has taken its snapshot: the vector lands after it.
            gate.execute("SELECT FROM embeddings.targets WHERE id = %s FOR UPDATE", target)
            conn.execute("INSERT INTO docs (id, body) VALUES (%s, %s)", (i, f"document number {i}"))
            app.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
            assert app.execute("SELECT body FROM docs WHERE id = %s", (i,)).fetchone()
            gate.commit()
            wait_for(functools.partial(is_embedded, conn, store, i), timeout=60)
            try:
                app.execute("UPDATE docs SET note = 'reviewed' WHERE id = %s", (i,))
                app.commit()
            except psycopg.errors.SerializationFailure:
                failures += 1
                app.rollback()
    assert failures == (20 if store == "row" else 0)
    assert conn.execute("SELECT count(*) FROM docs WHERE note = 'reviewed'").fetchone() == (
        (0,) if store == "row" else (20,)
    )


# --- model changes --------------------------------------------------------------------------------
def test_a_model_change_fills_a_shadow_column_of_the_side_table_and_swaps_there(
    conn: Conn, dsn: str, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    """Blue/green on a side-table target (sql/44_changes.sql): the new model's vectors go into a
    shadow column of the side table while the old ones serve; the swap renames there, and
    search embeds with the new model after it. The watched table is never altered."""
    old = tiny_models[0]
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES (%s, %s, 512, 'mean')",
        (WIDE, WIDE_DIMS),
    )
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT i, 'document number ' || i FROM generate_series(1, 50) i")
    watch(conn, old)
    run_once(model=old)
    before = stores.columns(conn, "docs")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s, keep_old => true)", (WIDE,))
    assert ("embedding_next", "halfvec(48)", False) in stores.columns(conn, "docs_embeddings")
    assert conn.execute(
        "SELECT change_model, change_done_rows, change_total_rows FROM embeddings.status"
    ).fetchone() == (WIDE, 0, 50)
    run_once(model=old)
    assert conn.execute("SELECT model FROM embeddings.targets").fetchone() == (WIDE,)
    assert [(c[0], c[1]) for c in stores.columns(conn, "docs_embeddings")] == [
        ("id", "bigint"),
        ("embedding_previous", "halfvec(32)"),
        ("content_md5", "text"),
        ("embedding", "halfvec(48)"),
    ]
    assert stores.columns(conn, "docs") == before
    assert conn.execute(
        "SELECT count(embedding), count(embedding_previous) FROM docs_embeddings"
    ).fetchone() == (50, 50)
    conn.execute("INSERT INTO docs VALUES (500, 'after the change')")
    run_once(model=old)
    found = run_cli(
        "search", "docs", "after the change", "-k", "1", "--json", "--database-url", dsn
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["key"] == 500  # typed as in the table


def test_search_serves_a_side_table_target(
    conn: Conn,
    docs: int,
    run_once: Callable[..., Worker],
    settings: Settings,
    embedders: LoadedModels,
) -> None:
    """search.run() (POST /search's, and the CLI's) ranks a side-table target's rows as any
    target's: keys, similarity, the content column's text."""
    run_once()
    conn.execute("DELETE FROM docs WHERE id = 1")  # not followed up yet: never returned
    found = search.run(
        conn, embedders.get, SearchRequest.parse({"table": "docs", "query": TEXTS[1], "k": 4})
    )
    assert sorted(r["key"] for r in found) == [2, 3, 4]
    assert {r["content"] for r in found} == {TEXTS[2], TEXTS[3], TEXTS[4]}
