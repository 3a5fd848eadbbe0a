"""Partitioned tables (issue 13 §2): writes through the parent and straight into partitions,
partitions created or attached later, rows moving between partitions, detaching."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from tests.support.jobs import clear_queue, messages, queued_keys
from tests.support.process import wait_for
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


@pytest.fixture
def docs(conn: Conn, minilm: str) -> int:
    conn.execute(
        "CREATE TABLE docs (region text, id bigint, body text, PRIMARY KEY (region, id))"
        " PARTITION BY LIST (region)"
    )
    conn.execute("CREATE TABLE docs_eu PARTITION OF docs FOR VALUES IN ('eu')")
    # A sub-partitioned partition.
    conn.execute(
        "CREATE TABLE docs_us PARTITION OF docs FOR VALUES IN ('us') PARTITION BY RANGE (id)"
    )
    conn.execute("CREATE TABLE docs_us_low PARTITION OF docs_us FOR VALUES FROM (0) TO (1000)")
    conn.execute("INSERT INTO docs VALUES ('eu', 1, 'existing row')")
    row = conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,)).fetchone()
    assert row is not None
    assert queued_keys(conn, row[0]) == [["eu", 1]]
    clear_queue(conn)
    return int(row[0])


def embedded(conn: Conn) -> dict[tuple[str, int], bool]:
    rows = conn.execute("SELECT region, id, embedding IS NOT NULL FROM docs").fetchall()
    return {(r, i): e for r, i, e in rows}


def test_writes_to_the_parent_and_to_each_partition_enqueue_once(conn: Conn, docs: int) -> None:
    conn.execute("INSERT INTO docs VALUES ('eu', 2, 'via parent'), ('us', 3, 'via parent')")
    conn.execute("INSERT INTO docs_eu VALUES ('eu', 4, 'straight into a partition')")
    conn.execute("INSERT INTO docs_us VALUES ('us', 5, 'into a partitioned partition')")
    conn.execute("INSERT INTO docs_us_low VALUES ('us', 6, 'into a sub-partition')")
    conn.execute("UPDATE docs_eu SET body = 'edited in the partition' WHERE id = 4")
    assert queued_keys(conn, docs) == [
        ["eu", 2],
        ["us", 3],
        ["eu", 4],
        ["us", 5],
        ["us", 6],
        ["eu", 4],
    ]


def test_partitions_created_or_attached_later_are_covered(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute("CREATE TABLE docs_ap PARTITION OF docs FOR VALUES IN ('ap')")
    conn.execute("INSERT INTO docs_ap VALUES ('ap', 7, 'new partition')")
    assert queued_keys(conn, docs) == [["ap", 7]]
    # A table with rows, attached: its rows are enqueued, and its own writes from then on.
    conn.execute("CREATE TABLE docs_sa (LIKE docs)")
    conn.execute("INSERT INTO docs_sa VALUES ('sa', 8, 'was here before'), ('sa', 9, '')")
    conn.execute("ALTER TABLE docs ATTACH PARTITION docs_sa FOR VALUES IN ('sa')")
    assert queued_keys(conn, docs) == [["ap", 7], ["sa", 8]]
    conn.execute("INSERT INTO docs_sa VALUES ('sa', 10, 'written after attaching')")
    assert queued_keys(conn, docs) == [["ap", 7], ["sa", 8], ["sa", 10]]
    run_once()
    assert embedded(conn) == {
        ("eu", 1): False,  # its job was cleared by the fixture
        ("ap", 7): True,
        ("sa", 8): True,
        ("sa", 9): False,
        ("sa", 10): True,
    }
    # search over the parent: one HNSW index per partition.
    indexed = conn.execute(
        "SELECT count(*) FROM pg_indexes WHERE tablename IN ('docs_sa', 'docs_ap')"
        " AND indexdef LIKE '%hnsw%'"
    ).fetchone()
    assert indexed == (2,)


def test_a_row_moving_between_partitions_is_embedded_under_its_new_key(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute("UPDATE docs SET region = 'us' WHERE id = 1")
    assert queued_keys(conn, docs) == [["us", 1]]
    run_once()
    assert embedded(conn) == {("us", 1): True}
    assert messages(conn) == []


def test_a_detached_partition_is_no_longer_covered(conn: Conn, docs: int) -> None:
    conn.execute("ALTER TABLE docs DETACH PARTITION docs_eu")
    triggers = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs_eu'::regclass AND NOT tgisinternal"
    ).fetchone()
    assert triggers == (0,)
    conn.execute("INSERT INTO docs_eu VALUES ('eu', 11, 'not watched any more')")
    conn.execute("UPDATE docs_eu SET body = 'still not' WHERE id = 1")
    assert queued_keys(conn, docs) == []
    conn.execute("INSERT INTO docs VALUES ('us', 12, 'the rest still is')")
    assert queued_keys(conn, docs) == [["us", 12]]


@pytest.mark.parametrize("partition", ["docs_eu", "docs_us_low"])
def test_a_partition_of_a_watched_table_is_refused_on_the_same_column(
    conn: Conn, docs: int, minilm: str, partition: str
) -> None:
    """Two targets would embed its rows into the same column (and a verifying sweep of one
    would queue again what the other wrote). Another column, or once detached, is another
    target's to have."""
    with pytest.raises(
        psycopg.errors.ObjectInUse,
        match=rf"public\.{partition} is a partition of public\.docs, which is watched with"
        r" embedding_column => 'embedding'",
    ) as refused:
        conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (partition, minilm))
    assert refused.value.diag.message_detail == "Target public.docs.embedding embeds them already."
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (1,)
    conn.execute("ALTER TABLE docs DETACH PARTITION docs_eu")
    conn.execute("SELECT embeddings.watch('docs_eu', 'body', model => %s)", (minilm,))


def test_a_table_one_of_whose_partitions_is_watched_is_refused_on_the_same_column(
    conn: Conn, minilm: str
) -> None:
    conn.execute(
        "CREATE TABLE events (id int, at date, body text, embedding halfvec(384),"
        " PRIMARY KEY (id, at)) PARTITION BY RANGE (at)"
    )
    conn.execute(
        "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
    )
    conn.execute("SELECT embeddings.watch('events_2025', 'body', model => %s)", (minilm,))
    with pytest.raises(
        psycopg.errors.ObjectInUse,
        match=r"public\.events has a partition, public\.events_2025, watched with"
        r" embedding_column => 'embedding'",
    ):
        conn.execute("SELECT embeddings.watch('events', 'body', model => %s)", (minilm,))
    assert conn.execute("SELECT source::text FROM embeddings.targets").fetchall() == [
        ("events_2025",)
    ]


@pytest.mark.parametrize("first", ["docs", "docs_eu"])
def test_a_table_and_its_partition_watched_at_once_in_two_sessions_make_one_target(
    dsn: str, conn: Conn, minilm: str, first: str
) -> None:
    """Each session's check read the targets before the other committed: both passed it, and
    both tables were watched on one column (each row embedded twice, by two triggers). The
    second now waits, boundedly, for the first's transaction, and is then refused."""
    conn.execute(
        "CREATE TABLE docs (region text, id bigint, body text, embedding halfvec(384),"
        " PRIMARY KEY (region, id)) PARTITION BY LIST (region)"
    )
    conn.execute("CREATE TABLE docs_eu PARTITION OF docs FOR VALUES IN ('eu')")
    second = "docs_eu" if first == "docs" else "docs"
    with psycopg.connect(dsn) as one, psycopg.connect(dsn, autocommit=True) as two:
        one.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (first, minilm))
        other = two.info.backend_pid
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(
                two.execute, "SELECT embeddings.watch(%s, 'body', model => %s)", (second, minilm)
            )
            waits_for_a_lock(conn, other)
            one.commit()
            with pytest.raises(psycopg.errors.ObjectInUse, match="rows would be embedded twice"):
                call.result(timeout=60)
    assert conn.execute("SELECT source::text FROM embeddings.targets").fetchall() == [(first,)]


def test_a_watch_waiting_for_another_of_its_partition_tree_gives_up_in_time(
    dsn: str, conn: Conn, minilm: str
) -> None:
    """The wait is bounded (embeddings.lock_wait, or a shorter lock_timeout), names what it
    waited for, and leaves the caller's lock_timeout as it was."""
    conn.execute(
        "CREATE TABLE docs (region text, id bigint, body text, embedding halfvec(384),"
        " PRIMARY KEY (region, id)) PARTITION BY LIST (region)"
    )
    conn.execute("CREATE TABLE docs_eu PARTITION OF docs FOR VALUES IN ('eu')")
    with psycopg.connect(dsn) as one, psycopg.connect(dsn, autocommit=True) as two:
        one.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
        two.execute("SET embeddings.lock_wait = '200ms'")
        with pytest.raises(
            psycopg.errors.LockNotAvailable,
            match=r"could not watch public\.docs_eu: another session's watch\(\) of public\.docs"
            r" \(or of a partition of it\) has not committed within 0\.20 s",
        ):
            two.execute("SELECT embeddings.watch('docs_eu', 'body', model => %s)", (minilm,))
        assert two.execute("SHOW lock_timeout").fetchone() == ("0",)
        one.rollback()
        two.execute("SELECT embeddings.watch('docs_eu', 'body', model => %s)", (minilm,))


def test_a_watch_in_a_repeatable_read_transaction_beside_another_of_its_tree_fails_to_serialize(
    dsn: str, conn: Conn, minilm: str
) -> None:
    """A REPEATABLE READ transaction's snapshot is older than the lock it waited for: its check
    read the targets as they were before the other watch() committed, passed, and both tables
    were watched on one column. It now fails as such transactions fail on any concurrent write
    (serialization_failure: run it again), and nothing of it is kept."""
    conn.execute(
        "CREATE TABLE docs (region text, id bigint, body text, embedding halfvec(384),"
        " PRIMARY KEY (region, id)) PARTITION BY LIST (region)"
    )
    conn.execute("CREATE TABLE docs_eu PARTITION OF docs FOR VALUES IN ('eu')")
    with psycopg.connect(dsn) as one, psycopg.connect(dsn) as two:
        two.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        two.execute("SELECT 1")  # the snapshot is taken here, before the first watch() commits
        one.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
        other = two.info.backend_pid
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(
                two.execute, "SELECT embeddings.watch('docs_eu', 'body', model => %s)", (minilm,)
            )
            waits_for_a_lock(conn, other)
            one.commit()
            with pytest.raises(psycopg.errors.SerializationFailure):
                call.result(timeout=60)
        two.rollback()
    assert conn.execute("SELECT source::text FROM embeddings.targets").fetchall() == [("docs",)]


def waits_for_a_lock(conn: Conn, pid: int) -> None:
    """Until session `pid` (the second watch()) waits for a lock (the first's)."""
    wait_for(
        lambda: (
            conn.execute(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            == (True,)
        ),
        timeout=30,
        what="the second watch() to wait for the first",
    )


def test_a_partition_s_ancestry_is_looked_up_once_a_transaction(conn: Conn, docs: int) -> None:
    """The trigger functions check that they fire on their target's table (a table restored
    alone brings triggers bound to another target's code: sql/30_triggers.sql); on a partition,
    whose name is not the table's, that meant a lookup of its ancestors for every row the
    clear trigger saw: an UPDATE of 50,000 rows of a partitioned table took 3.7 times as long.
    The lookup's answer is kept for the transaction (a local setting per target and
    partition), and rows of another partition look it up once for theirs."""
    conn.execute("INSERT INTO docs SELECT 'eu', g, 'row ' || g FROM generate_series(10, 20) g")
    memo = f"embeddings.own_{docs}_"
    with conn.transaction():
        conn.execute("UPDATE docs SET body = body || '!' WHERE region = 'eu'")
        kept = conn.execute(
            "SELECT current_setting(%s || 'docs_eu'::regclass::oid, true),"
            " current_setting(%s || 'docs_us_low'::regclass::oid, true)",
            (memo, memo),
        ).fetchone()
        assert kept in (("y", None), ("y", ""))
    # (local to the transaction: the next one looks again)
    after = conn.execute(
        "SELECT current_setting(%s || 'docs_eu'::regclass::oid, true)", (memo,)
    ).fetchone()
    assert after in ((None,), ("",))
    # the 11 inserts, then the updates of eu's 12 rows: none lost
    assert len(queued_keys(conn, docs)) == 11 + 12
