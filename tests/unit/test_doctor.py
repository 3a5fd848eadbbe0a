"""doctor's extension checks, from what the database has and what the server offers (the test
cluster offers everything, so the server-side cases are checked here)."""

from __future__ import annotations

import pytest

from worker.cli.extension_findings import pgmq_finding, vector_finding


@pytest.mark.parametrize(
    ("installed", "offered", "level", "says"),
    [
        ("0.8.3", "0.8.3", "ok", "version 0.8.3"),
        (None, "0.8.4", "ok", "`embed-worker migrate` creates the extension"),
        ("0.6.2", "0.8.0", "FAIL", "has no halfvec"),
        (None, "0.6.2", "FAIL", "the server offers only 0.6.2"),
        (None, None, "FAIL", "has no pgvector >= 0.7"),
    ],
)
def test_pgvector_needs_installing_on_the_server_only_when_it_offers_none(
    installed: str | None, offered: str | None, level: str, says: str
) -> None:
    found = vector_finding(installed, offered)
    assert (found.level, found.check) == (level, "pgvector")
    assert says in found.detail
    assert ("install pgvector >= 0.7 on the database server" in found.fix) == (
        installed is None and level == "FAIL"
    )


@pytest.mark.parametrize(
    ("installed", "offered", "level"),
    [
        ("0.8.0", "0.8.0", "warn"),
        ("0.7.4", "0.8.2", "warn"),
        (None, "0.8.0", "warn"),  # the version `migrate` would create
        ("0.8.0", "0.8.3", "ok"),  # the server's library runs, whatever the database's version
        ("0.8.3", None, "ok"),
        ("0.9.0", "0.10.1", "ok"),
    ],
)
def test_a_pgvector_with_the_hnsw_vacuum_race_is_warned_of(
    installed: str | None, offered: str | None, level: str
) -> None:
    """pgvector before 0.8.3 (its CHANGELOG: "Fixed possible index corruption with HNSW
    vacuuming"): a VACUUM of an HNSW index concurrent with inserts can corrupt it, and it then
    fails "different halfvec dimensions 384 and 0". doctor said `ok  pgvector: version 0.8.0`."""
    found = vector_finding(installed, offered)
    assert (found.level, found.check) == (level, "pgvector")
    if level == "warn":
        assert "fixed in 0.8.3" in found.detail and "different halfvec dimensions" in found.detail
        assert found.fix.startswith("upgrade pgvector on the database server to 0.8.3 or later")
        assert "REINDEX" in found.fix
    else:
        assert "vacuum" not in found.detail and not found.fix


@pytest.mark.parametrize(
    ("installed", "offered", "as_sql", "level", "says"),
    [
        ("1.13.0", "1.13.0", False, "ok", "version 1.13.0"),
        (None, None, True, "ok", "installed as SQL"),
        (None, "1.13.0", False, "ok", "`embed-worker migrate` creates the extension"),
        (None, None, False, "ok", "`embed-worker migrate` installs it as plain SQL"),
        ("1.3.0", "1.13.0", False, "FAIL", "too old"),
    ],
)
def test_pgmq_is_always_something_migrate_provides(
    installed: str | None, offered: str | None, as_sql: bool, level: str, says: str
) -> None:
    found = pgmq_finding(installed, offered, as_sql)
    assert (found.level, found.check) == (level, "pgmq")
    assert says in found.detail


def test_the_verification_fix_offers_pg_cron_only_where_it_runs_jobs() -> None:
    """A database where pg_cron cannot run jobs (cron.database_name is another one) is not told
    to call schedule_sweep(), which would fail there (issue 37)."""
    from datetime import UTC, datetime, timedelta

    from worker.cli.verification import verification_finding

    now = datetime(2026, 11, 23, tzinfo=UTC)
    rows = [{"target": "public.docs.embedding", "target_id": 1, "last_verified": None}]
    old = {1: now - timedelta(days=9)}
    here = verification_finding(rows, 86400.0, "", now, watched=old, cron_here=True)
    elsewhere = verification_finding(rows, 86400.0, "", now, watched=old, cron_here=False)
    assert "schedule_sweep(verify => true)" in here.fix
    assert "schedule_sweep" not in elsewhere.fix and "sweep --verify" in elsewhere.fix
    fresh = {1: now - timedelta(minutes=1)}
    assert verification_finding(rows, 86400.0, "", now, watched=fresh).level == "ok"


def test_the_verification_finding_counts_the_tables_that_wait_for_their_first_pass() -> None:
    """A table watched within the max age has no pass yet: the finding says how many are
    verified and how many wait, not "every watched table verified" (it said so beside a table
    never verified)."""
    from datetime import UTC, datetime, timedelta

    from worker.cli.verification import verification_finding

    now = datetime(2026, 11, 23, tzinfo=UTC)
    rows = [
        {"target": "public.old.embedding", "target_id": 1, "last_verified": now},
        {"target": "public.new.embedding", "target_id": 2, "last_verified": None},
    ]
    watched = {1: now - timedelta(days=9), 2: now - timedelta(minutes=1)}
    found = verification_finding(rows, 86400.0, "", now, watched=watched)
    assert found.level == "ok"
    assert "every watched table" not in found.detail
    assert found.detail.startswith("1 of 2 watched table(s) verified against their content")
    assert "1 more watched within 24.0 h wait for their first pass" in found.detail
    assert "public.new.embedding" in found.detail

    rows[0]["last_verified"] = now - timedelta(days=2)  # stale: the warning counts both too
    stale = verification_finding(rows, 86400.0, "", now, watched=watched)
    assert stale.level == "warn" and "1 of 2 watched table(s) not verified" in stale.detail
    assert "1 more watched within 24.0 h wait for their first pass" in stale.detail
    alone = verification_finding(rows[:1], 86400.0, "", now, watched=watched)
    assert "wait for their first pass" not in alone.detail


@pytest.mark.parametrize(
    ("here", "cron_database", "level", "says"),
    [
        (True, "app", "ok", "preloaded, installed in this database"),
        (False, "app", "ok", "`embed-worker migrate` creates the extension here"),
        (False, "postgres", "ok", "runs jobs in database postgres only (cron.database_name)"),
    ],
)
def test_pg_cron_preloaded_for_another_database_is_said_so(
    here: bool, cron_database: str, level: str, says: str
) -> None:
    """doctor said "ok pg_cron: preloaded" in a database where pg_cron runs no jobs
    (cron.database_name names another), and schedule_sweep() failed there."""
    from worker.cli.doctor import cron_finding

    found = cron_finding(here=here, cron_database=cron_database, database="app", dsn="")
    assert (found.level, found.check) == (level, "pg_cron")
    assert says in found.detail
    if cron_database != "app":
        assert "schedule_sweep() cannot schedule here" in found.detail
        assert "sweep" in found.fix and "cron.schedule_in_database" in found.fix
