"""A real hot standby (tests/support/standby.py): the worker given one waits and says why, and
searches go to one (EMBED_SEARCH_DATABASE_URL) while the worker writes to its primary
(docs/scaling.md, "Searches on a replica")."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.acceptance.test_http import post
from tests.support.process import WorkerProcess, run_cli, wait_for
from tests.support.standby import primary_and_standby


def test_a_standby_is_searched_and_waited_out_but_never_written(worker_env: dict[str, str]) -> None:
    with primary_and_standby() as pair:
        run_cli("migrate", env={"DATABASE_URL": pair.primary}, check=True)
        with psycopg.connect(pair.primary, autocommit=True) as primary:
            primary.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
            primary.execute(
                "SELECT embeddings.watch('docs', 'body', model => %s)", (worker_env["EMBED_MODEL"],)
            )
            primary.execute("INSERT INTO docs VALUES (1, 'a lighthouse on a cliff')")

        on_standby = WorkerProcess(pair.standby, worker_env)
        writer = WorkerProcess(
            pair.primary, {**worker_env, "EMBED_SEARCH_DATABASE_URL": pair.standby}
        )
        try:
            writer.wait_ready()

            def found() -> list[Any]:
                question = {"table": "docs", "query": "lighthouse", "k": 1}
                status, _, body = post(writer, "/search", question, token=None)
                assert status == 200, body
                return [r["key"] for r in body["results"]]

            wait_for(lambda: found() == [1], timeout=60, what="the row found through the standby")

            wait_for(
                lambda: on_standby.get("/readyz")[0] == 503,
                timeout=60,
                what="the standby's worker to say it is not ready",
            )
            assert "hot standby" in on_standby.get("/readyz")[1].decode()
            assert on_standby.proc.poll() is None  # waiting, not gone
            doctor = run_cli("doctor", env={**worker_env, "DATABASE_URL": pair.standby})
            assert doctor.returncode == 1 and "hot standby" in doctor.stdout
        finally:
            on_standby.stop()
            writer.stop()
