"""DDL on a watched table while a batch of it is in flight (QA 5a, finding 1): what changes nothing
the batch was read under (a partition created, attached or detached, a storage parameter, a
statistics target, a column added) leaves the batch's vectors to be written; a rename still hands
the batch back, and the batch's log line says how many rows it handed back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import TINY_DIMS
from tests.support.in_flight import InFlight
from tests.support.jobs import messages
from worker.pipeline import stages, write
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

TEXTS = {1: "alpha beta gamma", 2: "the quick brown fox", 3: "a third sentence"}
COLUMNS = f"id bigint PRIMARY KEY, body text, embedding halfvec({TINY_DIMS})"


def plain_docs(conn: Conn) -> None:
    conn.execute(f"CREATE TABLE docs ({COLUMNS})")


def partitioned_docs(conn: Conn) -> None:
    """`docs` partitioned by id: its rows in docs_low, docs_empty holding none."""
    conn.execute(f"CREATE TABLE docs ({COLUMNS}) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE docs_low PARTITION OF docs FOR VALUES FROM (0) TO (100)")
    conn.execute("CREATE TABLE docs_empty PARTITION OF docs FOR VALUES FROM (100) TO (200)")
    conn.execute("CREATE TABLE docs_spare (LIKE docs)")


def watched(conn: Conn, make: Callable[[Conn], None], model: str) -> None:
    make(conn)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO docs (id, body) VALUES (%s, %s)", list(TEXTS.items()))
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))


def version(conn: Conn) -> int:
    row = conn.execute("SELECT version FROM embeddings.targets").fetchone()
    assert row is not None
    return int(row[0])


UNCHANGING = [
    (plain_docs, "ALTER TABLE docs SET (autovacuum_vacuum_scale_factor = 0.05)"),
    (plain_docs, "ALTER TABLE docs ALTER COLUMN body SET STATISTICS 500"),
    (plain_docs, "ALTER TABLE docs ALTER COLUMN id SET STATISTICS 500"),
    (plain_docs, "ALTER TABLE docs ADD COLUMN note text"),
    (partitioned_docs, "CREATE TABLE docs_more PARTITION OF docs FOR VALUES FROM (200) TO (300)"),
    (
        partitioned_docs,
        "ALTER TABLE docs ATTACH PARTITION docs_spare FOR VALUES FROM (300) TO (400)",
    ),
    (partitioned_docs, "ALTER TABLE docs DETACH PARTITION docs_empty"),
    (partitioned_docs, "ALTER TABLE docs_low SET (autovacuum_vacuum_scale_factor = 0.05)"),
]


@pytest.mark.parametrize(("make", "ddl"), UNCHANGING, ids=[ddl for _, ddl in UNCHANGING])
def test_ddl_that_changes_nothing_a_batch_reads_lets_its_vectors_be_written(
    conn: Conn,
    tiny_models: tuple[str, str],
    in_flight: InFlight,
    make: Callable[[Conn], None],
    ddl: str,
) -> None:
    watched(conn, make, tiny_models[0])
    before = version(conn)
    embedders, settings = in_flight.embedders, in_flight.settings
    with in_flight.read() as (worker_conn, queue, batch):
        stages.load(worker_conn, batch, embedders)
        stages.embed(embedders, batch)
        conn.execute(ddl)
        settlement = write.write(worker_conn, queue, batch, settings)

    assert settlement.release == []
    assert sorted(settlement.delete) == sorted(batch.msg_ids)
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (len(TEXTS),)
    assert messages(conn) == []
    assert version(conn) == before


def test_repeated_partition_ddl_does_not_starve_a_target(
    conn: Conn, tiny_models: tuple[str, str], in_flight: InFlight
) -> None:
    """(hourly partitions made by pg_partman while long batches drain)"""
    watched(conn, partitioned_docs, tiny_models[0])
    embedders, settings = in_flight.embedders, in_flight.settings
    with in_flight.read() as (worker_conn, queue, batch):
        stages.load(worker_conn, batch, embedders)
        for i in range(3):
            conn.execute(
                f"CREATE TABLE docs_p{i} PARTITION OF docs"
                f" FOR VALUES FROM ({1000 + i * 10}) TO ({1010 + i * 10})"
            )
            conn.execute(f"ALTER TABLE docs DETACH PARTITION docs_p{i}")
        stages.embed(embedders, batch)
        write.write(worker_conn, queue, batch, settings)
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (len(TEXTS),)


def test_a_retype_or_an_owner_change_still_hands_the_batch_back(
    conn: Conn, tiny_models: tuple[str, str], in_flight: InFlight, run_once: Callable[..., Worker]
) -> None:
    watched(conn, plain_docs, tiny_models[0])
    conn.execute("DROP ROLE IF EXISTS docs_new_owner")
    conn.execute("CREATE ROLE docs_new_owner")
    embedders, settings = in_flight.embedders, in_flight.settings
    for ddl in (
        "ALTER TABLE docs ALTER COLUMN body TYPE varchar(2000)",
        "ALTER TABLE docs OWNER TO docs_new_owner",
    ):
        before = version(conn)
        conn.execute(ddl)
        assert version(conn) == before + 1, ddl
    conn.execute("ALTER TABLE docs OWNER TO current_user")
    with in_flight.read() as (worker_conn, queue, batch):
        stages.load(worker_conn, batch, embedders)
        stages.embed(embedders, batch)
        conn.execute("ALTER TABLE docs ALTER COLUMN id TYPE numeric")  # the key's type
        settlement = write.write(worker_conn, queue, batch, settings)
    assert sorted(settlement.release) == sorted(batch.msg_ids)
    run_once()
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (len(TEXTS),)
    conn.execute("DROP ROLE docs_new_owner")


def test_a_batch_handed_back_says_how_many_rows_in_its_log_line(
    conn: Conn, tiny_models: tuple[str, str], in_flight: InFlight, caplog: pytest.LogCaptureFixture
) -> None:
    watched(conn, plain_docs, tiny_models[0])
    embedders, settings = in_flight.embedders, in_flight.settings
    with in_flight.read() as (worker_conn, queue, batch):
        stages.load(worker_conn, batch, embedders)
        stages.embed(embedders, batch)
        conn.execute("ALTER TABLE docs RENAME COLUMN body TO content")
        write.write(worker_conn, queue, batch, settings)
    with caplog.at_level(logging.INFO, logger=stages.__name__):
        stages.log_batch(batch)
    [line] = [r for r in caplog.records if r.getMessage().startswith("batch target=")]
    assert f"outdated={len(TEXTS)}" in line.getMessage()
    assert getattr(line, "outdated", None) == len(TEXTS)
