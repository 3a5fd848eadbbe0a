"""A rolling upgrade from each release (0.2.0, 0.3.0): today's `migrate` runs while the
release's worker keeps working, rows keep arriving, then today's worker starts and the old one stops. Nothing is lost,
failed or written in a shape the new schema misreads; the old worker keeps working or stands
down holding no jobs, saying why, without a traceback. Today's worker started first, against
the 0.2.0 schema, refuses to start and says what to run.

An old worker is the released code itself (tests/support/release.py: its tag's source, run on
this environment's libraries), against a database its own `migrate` made. The lock tests run
beside 0.2.0's worker, whose upgrade changes the most tables."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from packaging.requirements import Requirement
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from tests.support import release
from tests.support.cluster import REPO
from tests.support.models import MINILM
from tests.support.process import WorkerProcess, wait_for

# A table of every kind both releases watch, with how it is watched.
TABLES = {
    "up_rows": "'body'",
    "up_side": "'body', store => 'side'",
    "up_chunks": "'body', chunk_tokens => 32, chunk_overlap => 4",
}
ROWS_PER_STEP = 12
# From the new worker's start until every row is embedded (issue 47: 10 s).
DRAIN_SECONDS = 10.0


@pytest.fixture(scope="module")
def release_0_2_0(unpack_release: Callable[[str], release.Release]) -> release.Release:
    return unpack_release("0.2.0")


@pytest.fixture(scope="module", params=sorted(release.RELEASES))
def old_release(
    request: pytest.FixtureRequest, unpack_release: Callable[[str], release.Release]
) -> release.Release:
    """Each release a database can be upgraded from, with its worker running beside the upgrade."""
    return unpack_release(request.param)


@pytest.fixture
def worker_role(empty_dsn: str) -> Iterator[str]:
    """A least-privilege worker role, granted by the old release once its schema is there."""
    role = f"embed_worker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    yield role
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def _insert(dsn: str, start: int, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(
                f"INSERT INTO {table} SELECT g, repeat('{table} row ' || g || ' says hello. ', "
                "12) FROM generate_series(%s::integer, %s::integer) g",
                (start, start + count - 1),
            )


def _status(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM embeddings.status").fetchall()
    return {row["target"].split(".")[1]: row for row in rows}


def _all_embedded(dsn: str, total: int) -> bool:
    status = _status(dsn)
    return len(status) == len(TABLES) and all(
        (row["total_rows"], row["embedded_rows"], row["pending_jobs"]) == (total, total, 0)
        for row in status.values()
    )


def _migrate_today(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "migrate"],
        cwd=REPO,
        env={**release.Release("today", REPO).env(), "DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_each_release_s_dependencies_are_today_s(old_release: release.Release) -> None:
    """The old worker runs on this environment's libraries: it asks for nothing today's does
    not (a library it needs, missing here, would fail the upgrade test for the wrong reason)."""
    with (REPO / "pyproject.toml").open("rb") as f:
        import tomllib

        today = {Requirement(r).name for r in tomllib.load(f)["project"]["dependencies"]}
    assert {Requirement(r).name for r in old_release.dependencies()} <= today


def test_a_rolling_upgrade_from_each_release_loses_nothing(
    empty_dsn: str,
    worker_role: str,
    worker_env: dict[str, str],
    old_release: release.Release,
) -> None:
    migrated = old_release.run("migrate", dsn=empty_dsn)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("SELECT embeddings.grant_worker(%s)", (worker_role,))
        for table, how in TABLES.items():
            conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, body text)")
            conn.execute(f"SELECT embeddings.watch('{table}', {how}, model => '{MINILM}')")
    worker_dsn = make_conninfo(empty_dsn, user=worker_role)

    old = WorkerProcess(worker_dsn, {**old_release.env(), **worker_env}, cwd=old_release.root)
    new: WorkerProcess | None = None
    try:
        old.wait_ready()
        _insert(empty_dsn, 1, ROWS_PER_STEP)
        wait_for(
            lambda: _all_embedded(empty_dsn, ROWS_PER_STEP),
            60,
            what=f"{old_release.version} embeds",
        )

        # Rows still queued while the schema changes under the old worker.
        _insert(empty_dsn, ROWS_PER_STEP + 1, ROWS_PER_STEP)
        upgraded = _migrate_today(empty_dsn)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        _insert(empty_dsn, 2 * ROWS_PER_STEP + 1, ROWS_PER_STEP)
        total = 3 * ROWS_PER_STEP

        started = time.monotonic()
        new = WorkerProcess(worker_dsn, worker_env)
        old.signal(signal.SIGTERM)
        assert old.wait_exit(30) == 0, old.log_text()[-3000:]
        try:
            wait_for(
                lambda: _all_embedded(empty_dsn, total),
                max(0.5, DRAIN_SECONDS - (time.monotonic() - started)),
                what=f"every row embedded within {DRAIN_SECONDS} s of the new worker's start",
            )
        except TimeoutError as exc:
            raise AssertionError(
                f"{exc}: {_status(empty_dsn)}\nold worker:\n{old.log_text()[-4000:]}\n"
                f"new worker:\n{new.log_text()[-4000:]}"
            ) from None

        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
            # Every vector reads as the new schema reads it: one per row, of the model's
            # dimension, and every document's chunks cover it from its first chunk.
            for table in ("up_rows",):
                assert conn.execute(
                    f"SELECT count(*) FROM {table} WHERE embedding IS NULL "
                    "OR extensions_dims(embedding) <> 384".replace(
                        "extensions_dims", "public.vector_dims"
                    )
                ).fetchone() == (0,)
            assert conn.execute(
                "SELECT count(*) FROM up_side_embeddings WHERE embedding IS NOT NULL"
            ).fetchone() == (total,)
            assert conn.execute(
                "SELECT count(DISTINCT id), min(seq), bool_and(embedding IS NOT NULL) "
                "FROM up_chunks_chunks"
            ).fetchone() == (total, 0, True)
            query = conn.execute(
                "SELECT embedding FROM up_chunks_chunks ORDER BY id, seq LIMIT 1"
            ).fetchone()
            assert query is not None
            found = conn.execute(
                "SELECT count(*) FROM embeddings.match_chunks('up_chunks', %s, 5)", query
            ).fetchone()
            assert found == (5,)
        status = _status(empty_dsn)
        assert all(row["failed_jobs"] == 0 for row in status.values()), status

        old_log = old.log_text()
        assert "Traceback" not in old_log, old_log[-3000:]
        # Not one write of the old worker failed beside the migration (a deadlock with it
        # returned that batch's jobs only after their lease).
        assert not [r for r in old.log_records() if r.get("level") == "error"], old_log[-3000:]
        assert '"failed": 0' in old_log or "failed" not in old_log
        for record in old.log_records():
            assert not record.get("failed"), record
    finally:
        old.stop()
        if new is not None:
            new.stop()


def _migrate_today_in_background(dsn: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "migrate", *args],
        cwd=REPO,
        env={**release.Release("today", REPO).env(), "DATABASE_URL": dsn},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _waiting_for_a_lock(conn: psycopg.Connection[Any], than: int) -> bool:
    """Whether a session other than `than` (and this one) waits for a lock."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid NOT IN (%s, pg_backend_pid())",
        (than,),
    ).fetchone()
    return row is not None and row[0] > 0


def _watched_0_2_0(dsn: str, old: release.Release) -> None:
    migrated = old.run("migrate", dsn=dsn)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE up_rows (id integer PRIMARY KEY, body text)")
        conn.execute(f"SELECT embeddings.watch('up_rows', 'body', model => '{MINILM}')")
        conn.execute("INSERT INTO up_rows VALUES (1, 'a row')")


def test_migrate_beside_a_writing_worker_neither_deadlocks_nor_fails_its_write(
    empty_dsn: str, release_0_2_0: release.Release
) -> None:
    """A worker's write locks the rows of a watched table, then reads its target FOR SHARE.
    `migrate` beside it takes every lock it needs first, in one statement that waits under a
    second, and tries again when they are busy: the write commits, then the migration does.
    (Before, the migration altered embeddings.targets first and the watched table's triggers
    later; the two deadlocked, and the server failed one of them.)"""
    _watched_0_2_0(empty_dsn, release_0_2_0)
    with psycopg.connect(empty_dsn) as writer, psycopg.connect(empty_dsn, autocommit=True) as obs:
        writer.execute("UPDATE up_rows SET body = 'a row, edited' WHERE id = 1")
        migrate = _migrate_today_in_background(empty_dsn)
        try:
            wait_for(
                lambda: (
                    _waiting_for_a_lock(obs, writer.info.backend_pid) or migrate.poll() is not None
                ),
                60,
                what="migrate waiting for the writer's lock",
            )
            writer.execute(
                "SELECT t.version FROM embeddings.targets t WHERE t.id = 1 FOR SHARE"
            ).fetchall()
            writer.commit()
            output, _ = migrate.communicate(timeout=120)
        finally:
            migrate.kill()
        assert migrate.returncode == 0, output
        assert "applied 0019" in output
        assert obs.execute("SELECT body FROM up_rows").fetchone() == ("a row, edited",)


def test_migrate_gives_up_on_a_lock_held_too_long_and_changes_nothing(
    empty_dsn: str, release_0_2_0: release.Release
) -> None:
    """A transaction that keeps a watched table locked past `--lock-wait`: migrate stops,
    names the session that holds it, once, with the tables it holds, and leaves the 0.2.0
    schema as it was."""
    _watched_0_2_0(empty_dsn, release_0_2_0)
    with psycopg.connect(empty_dsn) as holder, psycopg.connect(empty_dsn, autocommit=True) as obs:
        holder.execute("UPDATE up_rows SET body = 'held' WHERE id = 1")
        migrate = _migrate_today_in_background(empty_dsn, "--lock-wait", "2")
        try:
            output, _ = migrate.communicate(timeout=120)
        finally:
            migrate.kill()
        holder.rollback()
        assert migrate.returncode != 0
        assert f"pid {holder.info.backend_pid}" in output and "--lock-wait" in output, output
        # The session once, with the tables it holds (not their indexes, nor our views: a
        # kilobyte of the same pid), schema-qualified.
        assert output.count(f"pid {holder.info.backend_pid} ") == 1, output
        assert "public.up_rows" in output and "_pkey" not in output, output
        assert "Traceback" not in output
        assert obs.execute(
            "SELECT to_regprocedure('embeddings_internal.schema_revision()') IS NULL"
        ).fetchone() == (True,)


def test_today_s_worker_refuses_a_0_2_0_schema_and_says_what_to_run(
    empty_dsn: str, worker_env: dict[str, str], release_0_2_0: release.Release
) -> None:
    """Started before `migrate`, today's worker does not serve the old schema: it says what to
    run and waits, not ready (a rolling Deployment keeps the old pods), and serves once the
    schema is migrated. A one-shot run exits non-zero with the same message."""
    migrated = release_0_2_0.run("migrate", dsn=empty_dsn)
    assert migrated.returncode == 0, migrated.stderr
    once = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--once"],
        cwd=REPO,
        env={**release.Release("today", REPO).env(), **worker_env, "DATABASE_URL": empty_dsn},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert once.returncode != 0, once.stderr
    assert "embed-worker migrate" in once.stderr and "Traceback" not in once.stderr, once.stderr

    new = WorkerProcess(empty_dsn, worker_env)
    try:
        wait_for(
            lambda: any(
                "embed-worker migrate" in r.get("message", "") and r.get("level") == "error"
                for r in new.log_records()
            ),
            60,
            what="the worker saying the schema must be migrated",
        )
        status, body = new.get("/readyz")
        assert status == 503, body
        assert new.proc.poll() is None
        upgraded = _migrate_today(empty_dsn)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        new.wait_ready(60)
        assert "Traceback" not in new.log_text()
    finally:
        new.stop()
