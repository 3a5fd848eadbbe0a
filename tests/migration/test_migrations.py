"""Migrations: up, down, up again; idempotent; equal to a fresh install of sql/."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.migration.scenarios import (
    CHUNK_TABLES,
    MONITOR,
    ROLE,
    fixture_roles,
    queued_keys,
    restore,
    watch_docs,
    watch_every_kind,
    watch_every_kind_0_3_0,
)
from tests.support.cluster import Cluster
from tests.support.schema_dump import pg_dump_schema
from worker import exceptions, schema
from worker.schema import files as schema_files


class Ours(NamedTuple):
    """How many of each kind of object of ours a database holds."""

    schema: int
    triggers: int  # the watched tables'
    queue: int
    event_triggers: int


def objects_of_ours(conn: psycopg.Connection[Any]) -> Ours:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'embeddings'),
                  (SELECT count(*) FROM pg_trigger WHERE tgname ~ '^embeddings_[0-9]+_'),
                  (SELECT count(*) FROM pgmq.meta WHERE queue_name = 'embedding_jobs'),
                  (SELECT count(*) FROM pg_event_trigger WHERE evtname ~ '^embeddings_')"""
    ).fetchone()
    assert row is not None
    return Ours(*(int(n) for n in row))


QUEUE_TABLES = {
    f"pgmq.{kind}_embedding_jobs{lane}" for kind in ("q", "a") for lane in ("", "_backfill")
}


def pg_monitor_reads(conn: psycopg.Connection[Any]) -> set[str]:
    """The tables of our queues (the live queue's and its backfill lane's) pg_monitor reads."""
    return {
        str(name)
        for (name,) in conn.execute(
            """SELECT c.oid::regclass::text FROM pg_class c
               WHERE c.oid::regclass::text = ANY(%s)
                 AND has_table_privilege('pg_monitor', c.oid, 'SELECT')""",
            (sorted(QUEUE_TABLES),),
        )
    }


def test_upgrade_twice_is_a_no_op(empty_dsn: str) -> None:
    first = schema.migrate(empty_dsn)
    assert first.applied == ["0001", "0002", "0019", "0020"]
    before = pg_dump_schema(empty_dsn)
    again = schema.migrate(empty_dsn)
    assert (again.applied, again.notices) == ([], [])  # nothing ran, so nothing was skipped
    assert again.lines() == ["already at 0020 (0.4.0, unreleased)"]
    assert pg_dump_schema(empty_dsn) == before


def test_up_down_up_keeps_user_data(empty_dsn: str) -> None:
    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        conn.execute("INSERT INTO docs VALUES (1, 'one'), (2, 'two')")
        conn.execute("SELECT embeddings.watch('docs', 'body')")
        conn.execute(
            "UPDATE docs SET embedding = array_fill(0.5, ARRAY[384])::halfvec WHERE id = 1"
        )
        assert objects_of_ours(conn) == Ours(schema=1, triggers=3, queue=1, event_triggers=2)

    schema.downgrade(empty_dsn)

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert objects_of_ours(conn) == Ours(schema=0, triggers=0, queue=0, event_triggers=0)
        rows = conn.execute(
            "SELECT id, body, embedding IS NOT NULL FROM docs ORDER BY id"
        ).fetchall()
        assert rows == [(1, "one", True), (2, "two", False)]
        assert schema.current_revision(conn) is None
        # Writes to the formerly watched table no longer touch anything of ours.
        conn.execute("INSERT INTO docs VALUES (3, 'three')")

    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert objects_of_ours(conn) == Ours(schema=1, triggers=0, queue=1, event_triggers=2)
        assert conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone() == (1,)
        # The existing 384-d column is reused; rows 2 and 3 lack an embedding and are queued
        # (on the backfill lane: watch()'s initial enqueue is backfill work).
        keys = conn.execute(
            "SELECT jsonb_path_query_array(message, '$.keys[*]') FROM pgmq.q_embedding_jobs_backfill"
        ).fetchone()
        assert keys is not None and sorted(keys[0]) == [2, 3]


def test_downgrade_refuses_when_objects_of_others_depend_on_the_schema(empty_dsn: str) -> None:
    """DROP SCHEMA ... CASCADE would take a user's view over embeddings.status (or a foreign key
    to our tables) along: the downgrade names them, says what to do and changes nothing; once
    they are gone it removes ours from targets of every kind (their triggers, policies and
    functions on user tables are ours, not named)."""
    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        watch_every_kind_0_3_0(conn)
        conn.execute("CREATE VIEW my_status AS SELECT target, pending_jobs FROM embeddings.status")
        conn.execute("CREATE TABLE notes_about (target integer REFERENCES embeddings.targets (id))")
    before = pg_dump_schema(empty_dsn)

    with pytest.raises(exceptions.EmbedWorkerError) as refused:
        schema.downgrade(empty_dsn)

    message = str(refused.value)
    assert "rule _RETURN on view public.my_status (uses view embeddings.status)" in message
    assert "constraint notes_about_target_fkey on table public.notes_about (uses" in message
    assert "Drop them" in message and "nothing was changed" in message
    assert message.count("\n  ") == 2, message  # the user's two objects only
    assert pg_dump_schema(empty_dsn) == before

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("DROP VIEW my_status")
        conn.execute("DROP TABLE notes_about")
    schema.downgrade(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert objects_of_ours(conn) == Ours(schema=0, triggers=0, queue=0, event_triggers=0)


def test_downgrade_keeps_a_queue_that_existed_before(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgmq")
        conn.execute("SELECT pgmq.create('embedding_jobs')")
        conn.execute("""SELECT pgmq.send('embedding_jobs', '{"id": 1}')""")
    schema.migrate(empty_dsn)
    schema.downgrade(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pgmq.q_embedding_jobs").fetchone() == (1,)
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pgmq.q_embedding_jobs'::regclass"
            " AND NOT tgisinternal"
        ).fetchone()
        assert triggers == (0,)


def test_migrated_schema_equals_fresh_install(cluster: Cluster) -> None:
    migrated = cluster.create_database(prefix="migrated")
    fresh = cluster.create_database(prefix="fresh")
    try:
        schema.migrate(cluster.dsn(migrated))
        with psycopg.connect(cluster.dsn(fresh)) as conn:
            schema.install(conn)
            conn.commit()
        migrated_dump = pg_dump_schema(cluster.dsn(migrated))
        assert "CREATE FUNCTION embeddings.watch" in migrated_dump
        assert migrated_dump == pg_dump_schema(cluster.dsn(fresh))
    finally:
        cluster.drop_database(migrated)
        cluster.drop_database(fresh)


def test_pgmq_installs_as_plain_sql_where_the_extension_is_unavailable(empty_dsn: str) -> None:
    """Managed servers without the pgmq extension get its SQL from the pgmq package."""
    with psycopg.connect(empty_dsn) as conn:
        # Hide the extension from this transaction only, as such a server would.
        conn.execute(
            "CREATE TEMP VIEW pg_available_extensions AS SELECT * FROM pg_catalog.pg_available_extensions WHERE name <> 'pgmq'"
        )
        conn.execute("SET search_path = pg_temp, pg_catalog, public")
        schema.ensure_pgmq(conn)
        installed = conn.execute(
            "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'pgmq'),"
            " to_regprocedure('pgmq.send(text, jsonb)') IS NOT NULL"
        ).fetchone()
        assert installed == (0, True)


def test_missing_pgvector_is_a_clear_error(empty_dsn: str) -> None:
    """The extensions' file on a server without pgvector (a temporary view in its place: run
    as the file itself, since the installer searches pg_catalog only, which no such view fools)."""
    with psycopg.connect(empty_dsn) as conn:
        conn.execute(
            "CREATE TEMP VIEW pg_available_extensions AS SELECT * FROM pg_catalog.pg_available_extensions WHERE name <> 'vector'"
        )
        conn.execute("SET search_path = pg_temp, pg_catalog, public")
        with pytest.raises(psycopg.errors.RaiseException, match="pgvector"):
            conn.execute((schema_files.sql_dir() / "state" / "00_extensions.sql").read_bytes())


def test_released_revisions_are_ancestors_of_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(schema_files.migrations_dir()))
    scripts = ScriptDirectory.from_config(config)
    chain = [s.revision for s in scripts.walk_revisions()]
    assert len(scripts.get_heads()) == 1
    assert set(schema_files.RELEASED_REVISIONS) <= set(chain)
    assert not set(chain) & (schema.SQUASHED_REVISIONS - {"0002"})  # main's old ids never reused
    for revision in schema_files.RELEASED_REVISIONS:  # `migrate` names the release of each
        assert schema_files.release_of(revision) != "unreleased"


@pytest.mark.parametrize("revision", schema_files.RELEASED_REVISIONS)
def test_released_revisions_are_frozen(revision: str) -> None:
    """A released revision's files never change: a database that applied it has exactly that
    schema. A change goes into the release revision still open (docs/development.md)."""
    assert schema_files.revision_digest(revision) == schema_files.RELEASED_REVISIONS[revision], (
        f"revision {revision} shipped in a release, and its files changed since"
    )


def test_sql_changes_after_a_release_go_into_a_new_revision() -> None:
    """Code reaches a database with a revision's upgrade: once the newest revision is
    released, sql/ must stay what it shipped (RELEASED_SQL) until the next release's revision
    exists, or its changes would reach no database (docs/development.md, "Schema changes")."""
    newest = sorted(p.stem for p in schema_files.versions_dir().glob("[0-9][0-9][0-9][0-9]_*.py"))[
        -1
    ]
    if newest[:4] not in schema_files.RELEASED_REVISIONS:
        assert schema_files.RELEASED_SQL is None  # pinned at the release, with its revision
        return
    assert schema_files.sql_digest() == schema_files.RELEASED_SQL, (
        f"sql/ changed after release revision {newest[:4]}: start the next release's revision"
    )


def test_revisions_hold_state_only() -> None:
    """No revision carries a copy of sql/'s code: its folder has upgrade.sql and tables.sql,
    and these create or alter tables, never a function, view or trigger."""
    code = re.compile(
        r"^\s*CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|VIEW|TRIGGER|PROCEDURE)", re.I | re.M
    )
    for folder in sorted(p for p in schema_files.versions_dir().iterdir() if p.is_dir()):
        if folder.name == "__pycache__":
            continue
        files = sorted(p.name for p in folder.rglob("*") if p.is_file())
        assert set(files) <= {"upgrade.sql", "tables.sql", "downgrade.sql"}, folder
        for name in files:
            assert not code.search((folder / name).read_text()), f"{folder.name}/{name}"


def test_an_empty_database_installs_only_at_head(empty_dsn: str) -> None:
    """This package has only the newest code: stopping a fresh install at an older revision
    would put that revision's tables under newer code. Refused, nothing installed."""
    with pytest.raises(exceptions.EmbedWorkerError, match="cannot install at revision 0002"):
        schema.migrate(empty_dsn, "0002")
    with psycopg.connect(empty_dsn) as conn:
        assert not schema.installed(conn)
        assert schema.current_revision(conn) is None


def test_freeze_release_gives_the_digests_to_pin(tmp_path: Path) -> None:
    """`make freeze-release` prints the digest of a release revision's files, which changes
    with any of them (what the frozen test catches); a revision without upgrade.sql is no
    release revision."""
    name = schema_files.revision_name("0019")
    versions = tmp_path / "versions"
    shutil.copytree(schema_files.versions_dir() / name, versions / name)
    shutil.copy2(schema_files.versions_dir() / f"{name}.py", versions)

    digest = schema_files.freeze_release("0019", versions=versions)

    assert digest == schema_files.revision_digest("0019", versions)
    (versions / name / "upgrade.sql").write_text("-- changed after the release\n")
    assert schema_files.revision_digest("0019", versions) != digest
    shutil.copy2(schema_files.versions_dir() / "0001_initial.py", versions)
    with pytest.raises(exceptions.EmbedWorkerError, match="not a release revision"):
        schema_files.freeze_release("0001", versions=versions)


# The releases a database can be upgraded from: each but the newest, which is head (a dump of
# each, fixtures/at_<revision>.sql.gz, is made once the next release opens its revision).
UPGRADABLE = [r for r in schema_files.RELEASED_REVISIONS if r != schema.head_revision()]


@pytest.mark.parametrize("start", UPGRADABLE)
def test_upgrade_keeps_jobs_failures_and_grants_and_equals_fresh_install(
    cluster: Cluster, start: str
) -> None:
    """A database at a released revision (fixtures/at_<start>.sql.gz: rows, queued jobs, a dead
    letter, a worker role and a monitoring role's grant), upgraded to head: the schema of a
    fresh install, nothing queued or dead-lettered lost, the roles' rights kept or brought up
    to date."""
    policies = (
        "SELECT string_agg(polcmd::text, '' ORDER BY polcmd) FROM pg_policy"
        " WHERE polrelid = 'docs'::regclass"
    )
    with fixture_roles(cluster):
        upgraded = restore(cluster, f"at_{start}")
        fresh = cluster.create_database(prefix="fresh")
        try:
            with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
                assert schema.current_revision(conn) == start
                jobs_before = queued_keys(conn)
                assert "pgmq.q_embedding_jobs" in pg_monitor_reads(conn)  # as pgmq granted it
                if start == "0001":
                    assert conn.execute(policies).fetchone() == ("*",)  # one FOR ALL policy
            assert len(jobs_before) == 301

            upgrade = schema.migrate(cluster.dsn(upgraded))
            assert upgrade.applied == [r for r in ("0001", "0002", "0019", "0020") if r > start]
            with psycopg.connect(cluster.dsn(fresh)) as conn:
                schema.install(conn)
                conn.commit()
            with psycopg.connect(cluster.dsn(fresh), autocommit=True) as conn:
                watch_docs(conn)  # the same user objects on both sides
            assert pg_dump_schema(cluster.dsn(upgraded)) == pg_dump_schema(cluster.dsn(fresh))
            with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
                assert queued_keys(conn) == jobs_before
                failures = conn.execute(
                    "SELECT row_key, last_error FROM embeddings.failures"
                ).fetchall()
                assert failures == [(7, "boom")]
                # 0.2.0's worker reads and writes watched tables through functions that run as
                # their owner: the policies 0.1.0 gave it go (docs/security.md).
                assert conn.execute(policies).fetchone() == (None,)
                assert conn.execute("SELECT version FROM embeddings.targets").fetchone() == (1,)
                monitored = conn.execute(
                    "SELECT has_table_privilege(%s, 'embeddings.status', 'SELECT')", (MONITOR,)
                ).fetchone()
                assert monitored == (True,)
                # What pgmq granted monitoring roles on the queues' tables is taken back.
                assert pg_monitor_reads(conn) == set()
            worker_dsn = make_conninfo(cluster.dsn(upgraded), user=ROLE)
            with psycopg.connect(worker_dsn) as worker_conn:  # the rights of the worker now
                row = worker_conn.execute(
                    "SELECT embeddings_internal.lock_target_version(id) FROM embeddings.targets"
                ).fetchone()
                assert row == (1,)
                assert worker_conn.execute(
                    "SELECT embeddings_internal.move_inbox('embedding_jobs')"
                ).fetchone()
        finally:
            cluster.drop_database(upgraded)
            cluster.drop_database(fresh)


def test_upgrade_gives_chunk_tables_their_offsets(cluster: Cluster) -> None:
    """Chunk tables of 0.2.0 (fixtures/at_0002_chunk_tables.sql.gz), one with full-text
    search, get start_offset and end_offset at their end, as fresh ones have them (watch()
    adds them after the tsvector); their chunks keep theirs NULL (until their document is
    embedded again)."""
    upgraded = restore(cluster, "at_0002_chunk_tables")
    fresh = cluster.create_database(prefix="fresh")
    try:
        assert schema.migrate(cluster.dsn(upgraded)).applied == ["0019", "0020"]
        assert schema.migrate(cluster.dsn(upgraded)).applied == []
        schema.migrate(cluster.dsn(fresh))
        with psycopg.connect(cluster.dsn(fresh), autocommit=True) as conn:
            conn.execute(CHUNK_TABLES)
        assert pg_dump_schema(cluster.dsn(upgraded)) == pg_dump_schema(cluster.dsn(fresh))
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            row = conn.execute("SELECT chunk, start_offset, end_offset FROM docs_chunks").fetchone()
            assert row == ("a chunk", None, None)
    finally:
        cluster.drop_database(upgraded)
        cluster.drop_database(fresh)


EVERY_KIND = {"0002": watch_every_kind, "0019": watch_every_kind_0_3_0}


@pytest.mark.parametrize("start", sorted(EVERY_KIND))
def test_upgrade_with_every_kind_of_target_equals_fresh_install(
    cluster: Cluster, start: str
) -> None:
    """A release's chunk tables, side tables, full-text columns, content-function wrappers, a
    model change's shadow column and (from 0.3.0) document targets
    (fixtures/at_<start>_every_kind.sql.gz), upgraded: the schema (the user's tables and the
    per-target functions included) of a fresh install that did the same, and no queued key
    lost."""
    upgraded = restore(cluster, f"at_{start}_every_kind")
    fresh = cluster.create_database(prefix="fresh")
    try:
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            jobs_before = queued_keys(conn)
            changing = conn.execute("SELECT count(*) FROM embeddings.model_changes").fetchone()
        assert changing == (1,)

        applied = schema.migrate(cluster.dsn(upgraded)).applied
        assert applied == [r for r in ("0019", "0020") if r > start]
        with psycopg.connect(cluster.dsn(fresh)) as conn:
            schema.install(conn)
            conn.commit()
        with psycopg.connect(cluster.dsn(fresh), autocommit=True) as conn:
            EVERY_KIND[start](conn)
        assert pg_dump_schema(cluster.dsn(upgraded)) == pg_dump_schema(cluster.dsn(fresh))
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            assert queued_keys(conn) == jobs_before
            assert conn.execute("SELECT count(*) FROM embeddings.model_changes").fetchone() == (1,)
    finally:
        cluster.drop_database(upgraded)
        cluster.drop_database(fresh)


def test_upgrade_takes_back_what_grant_worker_gave_a_role_built_into_postgres(
    cluster: Cluster,
) -> None:
    """0.3.0's grant_worker() took roles built into Postgres, which 0.4.0 refuses (each member
    would be a worker role, and read rows' content through the targets' functions): the
    upgrade failed on them (the reinstall grants each registered worker role again, and
    pg_monitor is refused), and kept their grants. Now it revokes what grant_worker() gave
    them, drops their rows and says so: the schema is a fresh install's."""
    with fixture_roles(cluster):
        upgraded = restore(cluster, "at_0019")
        fresh = cluster.create_database(prefix="fresh")
        try:
            with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
                for role in ("pg_monitor", "pg_read_all_stats"):
                    conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
                assert conn.execute(
                    "SELECT has_table_privilege('pg_monitor', 'embeddings.failures', 'DELETE'),"
                    " has_function_privilege('pg_read_all_stats',"
                    " 'embeddings.lock_target_version(integer)', 'EXECUTE')"
                ).fetchone() == (True, True)
            upgrade = schema.migrate(cluster.dsn(upgraded))
            said = [n for n in upgrade.notices if "was a worker role" in n]
            assert [n.split(" is built")[0] for n in said] == [
                "embeddings: role pg_monitor",
                "embeddings: role pg_read_all_stats",
            ], upgrade.notices
            with psycopg.connect(cluster.dsn(fresh)) as conn:
                schema.install(conn)
                conn.commit()
            with psycopg.connect(cluster.dsn(fresh), autocommit=True) as conn:
                watch_docs(conn)  # the same user objects on both sides
                conn.execute(f"GRANT SELECT ON embeddings.status TO {MONITOR}")
            assert pg_dump_schema(cluster.dsn(upgraded)) == pg_dump_schema(cluster.dsn(fresh))
            with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
                roles = conn.execute("SELECT role_name FROM embeddings.worker_roles").fetchall()
                assert roles == [(ROLE,)]
                held = conn.execute(
                    "SELECT has_table_privilege('pg_monitor', 'embeddings.failures', 'DELETE'),"
                    " has_function_privilege('pg_read_all_stats',"
                    " 'embeddings_internal.lock_target_version(integer)', 'EXECUTE')"
                ).fetchone()
                assert held == (False, False)
        finally:
            cluster.drop_database(upgraded)
            cluster.drop_database(fresh)


def test_an_upgrade_digests_every_definition_so_a_ddl_that_changes_nothing_keeps_its_version(
    cluster: Cluster,
) -> None:
    """0020's upgrade.sql added definition_digest NULL: the first schema change after the
    upgrade, one that changes nothing a batch depends on (a statistics target), gave every
    target it touched a new version, and the batches read before it, by 0.3.0's workers or
    this release's, were handed back and their inference thrown away. The reinstall digests
    every target, of every kind, as the catalog has it; a rename still gives a new version."""
    upgraded = restore(cluster, "at_0019_every_kind")
    try:
        schema.migrate(cluster.dsn(upgraded))
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            # What a batch is read under: each target's version, as the worker reads it.
            targets = conn.execute(
                "SELECT t.id, t.source::text, a.attname, t.version FROM embeddings.targets t"
                " JOIN pg_attribute a ON a.attrelid = t.source AND a.attnum = t.key_attnums[1]"
                " ORDER BY t.id"
            ).fetchall()
            assert len(targets) >= 5, targets
            conn.execute("SELECT embeddings_internal.move_inbox('embedding_jobs')")
            read = conn.execute(
                "SELECT (SELECT count(*) FROM pgmq.read('embedding_jobs', 60, 100))"
                " + (SELECT count(*) FROM pgmq.read('embedding_jobs_backfill', 60, 100))"
            ).fetchone()
            assert read is not None and read[0] > 0
            for _, table, key, _ in targets:
                conn.execute(f"ALTER TABLE {table} ALTER COLUMN {key} SET STATISTICS 500")
            after: dict[int, int] = dict(
                conn.execute("SELECT id, version FROM embeddings.targets").fetchall()
            )
            assert after == {t[0]: t[3] for t in targets}
            assert conn.execute(
                "SELECT count(*) FROM embeddings.targets"
                " WHERE definition_digest IS DISTINCT FROM embeddings_internal.definition_digest(targets)"
            ).fetchone() == (0,)

            target_id, table, key, version = targets[0]
            conn.execute(f"ALTER TABLE {table} RENAME COLUMN {key} TO renamed_key")
            bumped = conn.execute(
                "SELECT version FROM embeddings.targets WHERE id = %s", (target_id,)
            ).fetchone()
            assert bumped == (version + 1,)
    finally:
        cluster.drop_database(upgraded)
