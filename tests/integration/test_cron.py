"""pg_cron runs embeddings.sweep() on schedule. pg_cron only works in the one database named
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
    with psycopg.connect(cron_db, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'"
        ).fetchone() == (1,)
        conn.execute("CREATE TABLE cron_docs (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO cron_docs SELECT g, 'text ' || g FROM generate_series(1, 10) g")
        conn.execute("SELECT embeddings.watch('cron_docs', 'body')")
        conn.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")  # the jobs are lost
        job = conn.execute("SELECT embeddings.schedule_sweep('* * * * *')").fetchone()
        assert job is not None
        assert conn.execute(
            "SELECT command FROM cron.job WHERE jobid = %s", (job[0],)
        ).fetchone() == ("SELECT embeddings.sweep(1000, '7 days'::interval)",)

        def swept() -> bool:
            row = conn.execute(
                "SELECT coalesce(sum(embeddings.message_key_count(message)), 0)"
                " FROM pgmq.q_embedding_jobs_backfill"  # what sweep() finds is backfill work
            ).fetchone()
            return row == (10,)

        wait_for(swept, timeout=75, interval=0.5, what="pg_cron to run embeddings.sweep()")
        run = conn.execute(
            "SELECT status FROM cron.job_run_details WHERE jobid = %s ORDER BY runid DESC LIMIT 1",
            (job[0],),
        ).fetchone()
        assert run == ("succeeded",)
        assert conn.execute("SELECT embeddings.unschedule_sweep()").fetchone() == (True,)
