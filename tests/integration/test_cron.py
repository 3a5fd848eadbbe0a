"""pg_cron runs embeddings.sweep() on schedule, plain and verifying. pg_cron only works in the one database named
by cron.database_name (here the cluster's `postgres` database), so this test migrates that one
and cleans up after itself. pg_cron 1.4 schedules by the minute: the test waits up to ~75 s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.cluster import Cluster
from tests.support.process import wait_for
from worker import schema

Conn = psycopg.Connection[Any]


@pytest.fixture
def cron_db(cluster: Cluster) -> Iterator[str]:
    if cluster.directory is None:
        pytest.skip("needs the suite's own cluster (TEST_DATABASE_URL points elsewhere)")
    dsn = cluster.dsn("postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT current_setting('cron.database_name', true)").fetchone() != (
            "postgres",
        ):
            pytest.skip("pg_cron is not preloaded for this database")
    schema.migrate(dsn)
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS cron_docs")
    schema.downgrade(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM cron.job WHERE jobname LIKE 'embeddings-%'"
        ).fetchone() == (0,)
        conn.execute("DROP EXTENSION IF EXISTS pg_cron")


@pytest.mark.slow
def test_the_scheduled_sweep_requeues_lost_jobs(cron_db: str) -> None:
    """The plain sweep, then the verifying one (sweep(verify => true), which queues rows without
    a vector too, and records its pass in embeddings.verification). One test (the schedule
    replaced): as two, each creating the extension again, the second's job once never ran."""
    with psycopg.connect(cron_db, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'"
        ).fetchone() == (1,)
        conn.execute("CREATE TABLE cron_docs (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO cron_docs SELECT g, 'text ' || g FROM generate_series(1, 10) g")
        conn.execute("SELECT embeddings.watch('cron_docs', 'body')")
        for verify in (False, True):
            scheduled(conn, verify)
        assert conn.execute("SELECT embeddings.unschedule_sweep()").fetchone() == (True,)


def scheduled(conn: Conn, verify: bool) -> None:
    """Schedules the sweep every minute, loses the jobs, and waits for its run to queue the 10
    rows again."""
    job = conn.execute(
        "SELECT embeddings.schedule_sweep('* * * * *', verify => %s)", (verify,)
    ).fetchone()
    assert job is not None
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")  # the jobs are lost
    command = "SELECT embeddings.sweep(1000, '7 days'::interval{})".format(
        ", verify => true" if verify else ""
    )
    assert conn.execute("SELECT command FROM cron.job WHERE jobid = %s", (job[0],)).fetchone() == (
        command,
    )

    def swept() -> bool:
        row = conn.execute(
            "SELECT coalesce(sum(embeddings.message_key_count(message)), 0)"
            " FROM pgmq.q_embedding_jobs_backfill"  # what sweep() finds is backfill work
        ).fetchone()
        return row == (10,)

    wait_for(swept, timeout=75, interval=0.5, what="pg_cron to run embeddings.sweep()")
    run = conn.execute(
        "SELECT status, command FROM cron.job_run_details WHERE jobid = %s"
        " ORDER BY runid DESC LIMIT 1",
        (job[0],),
    ).fetchone()
    assert run == ("succeeded", command)
    verified = conn.execute(
        "SELECT verified_rows, queued_by_last_pass, last_verified IS NOT NULL"
        " FROM embeddings.verification WHERE target = 'public.cron_docs.embedding'"
    ).fetchone()
    assert verified == ((10, 10, True) if verify else (None, None, False))
