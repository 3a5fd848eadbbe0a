"""Tables fed by logical replication (issue 13 §5): a real publication and subscription
between two databases of the test cluster. The apply worker fires only row triggers, and only
those enabled ALWAYS or REPLICA: `watch(..., replica => true)` installs one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.support.cluster import Cluster
from tests.support.jobs import queued_keys
from worker import status
from worker.cli import doctor
from worker.config import Settings
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


@pytest.fixture
def publisher(cluster: Cluster) -> Iterator[Conn]:
    name = cluster.create_database(prefix="publisher")
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        conn.execute("INSERT INTO docs VALUES (1, 'there before the subscription')")
        conn.execute("CREATE PUBLICATION docs_pub FOR TABLE docs")
        yield conn
    cluster.drop_database(name)


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("replica", [True, False])
def test_replicated_rows_enqueue_on_a_replica_target(
    conn: Conn,
    dsn: str,
    publisher: Conn,
    run_once: Callable[..., Worker],
    minilm: str,
    settings: Settings,
    replica: bool,
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    target = conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, replica => %s)", (minilm, replica)
    ).fetchone()
    assert target is not None
    slot = f"sub_{uuid.uuid4().hex[:8]}"
    # A subscription to the same cluster cannot create its own slot: make it first.
    publisher.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    info = psycopg.conninfo.conninfo_to_dict(publisher.info.dsn)
    conn.execute(
        f"CREATE SUBSCRIPTION {slot} CONNECTION"
        f" 'host={info['host']} port={info['port']} user={info['user']} dbname={info['dbname']}'"
        f" PUBLICATION docs_pub WITH (create_slot = false, slot_name = '{slot}')"
    )
    try:
        publisher.execute("INSERT INTO docs VALUES (2, 'replicated insert')")
        eventually(
            lambda: conn.execute("SELECT count(*) FROM docs").fetchone() == (2,),
            "the rows to replicate",
        )
        publisher.execute("UPDATE docs SET body = 'replicated update' WHERE id = 2")
        eventually(
            lambda: (
                conn.execute("SELECT body FROM docs WHERE id = 2").fetchone()
                == ("replicated update",)
            ),
            "the update to replicate",
        )
        queued = sorted(queued_keys(conn, target[0]))
        if not replica:
            assert queued == []
            # Never "done" (QA 5b, finding 3): two rows no job will ever embed; doctor names
            # the subscription that writes to the table.
            (row,) = status.fetch(conn)
            assert (row["pending_jobs"], row["unqueued_rows"]) == (0, 2), row
            found = {f.check: f for f in doctor.check(dsn, settings)}
            said = found["replication public.docs"]
            assert said.level == "warn" and f"subscription {slot} writes to" in said.detail
            assert "replica => true" in said.fix
            return
        # The initial copy (row 1), the insert and the update (row 2).
        assert queued == [1, 2, 2]
        run_once()
        assert conn.execute(
            "SELECT id, embedding IS NOT NULL FROM docs ORDER BY id"
        ).fetchall() == [(1, True), (2, True)]
        assert not [f for f in doctor.check(dsn, settings) if f.check.startswith("replication")]
        # A replicated change of the content clears the stale vector at once.
        publisher.execute("UPDATE docs SET body = 'changed again' WHERE id = 1")
        eventually(
            lambda: (
                conn.execute("SELECT embedding IS NULL FROM docs WHERE id = 1").fetchone()
                == (True,)
            ),
            "the stale vector to be cleared",
        )
        assert queued_keys(conn, target[0]) == [1]
    finally:
        conn.execute(f"ALTER SUBSCRIPTION {slot} DISABLE")
        conn.execute(f"ALTER SUBSCRIPTION {slot} SET (slot_name = NONE)")
        conn.execute(f"DROP SUBSCRIPTION {slot}")
        eventually(
            lambda: (
                publisher.execute(
                    "SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                ).fetchone()
                == (True,)
            ),
            "the walsender to let go of the slot",
        )
        publisher.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
