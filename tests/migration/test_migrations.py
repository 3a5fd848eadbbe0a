"""Migrations: up, down, up again; idempotent; equal to a fresh install of sql/."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.cluster import Cluster
from tests.support.schema_dump import pg_dump_schema
from worker import exceptions, schema


def objects_of_ours(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'embeddings'),
                  (SELECT count(*) FROM pg_trigger WHERE tgname ~ '^embeddings_[0-9]+_'),
                  (SELECT count(*) FROM pgmq.meta WHERE queue_name = 'embedding_jobs'),
                  (SELECT count(*) FROM pg_event_trigger WHERE evtname ~ '^embeddings_')"""
    ).fetchone()
    assert row is not None
    return {
        "schema": int(row[0]),
        "triggers": int(row[1]),
        "queue": int(row[2]),
        "event_triggers": int(row[3]),
    }


def test_upgrade_twice_is_a_no_op(empty_dsn: str) -> None:
    first = schema.migrate(empty_dsn)
    assert first.applied == ["0001", "0002", "0019"]
    before = pg_dump_schema(empty_dsn)
    again = schema.migrate(empty_dsn)
    assert (again.applied, again.notices) == ([], [])  # nothing ran, so nothing was skipped
    assert again.lines() == ["already at 0019 (0.3.0, unreleased)"]
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
        assert objects_of_ours(conn) == {
            "schema": 1,
            "triggers": 3,
            "queue": 1,
            "event_triggers": 2,
        }

    schema.downgrade(empty_dsn)

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert objects_of_ours(conn) == {
            "schema": 0,
            "triggers": 0,
            "queue": 0,
            "event_triggers": 0,
        }
        rows = conn.execute(
            "SELECT id, body, embedding IS NOT NULL FROM docs ORDER BY id"
        ).fetchall()
        assert rows == [(1, "one", True), (2, "two", False)]
        assert schema.current_revision(conn) is None
        # Writes to the formerly watched table no longer touch anything of ours.
        conn.execute("INSERT INTO docs VALUES (3, 'three')")

    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert objects_of_ours(conn) == {
            "schema": 1,
            "triggers": 0,
            "queue": 1,
            "event_triggers": 2,
        }
        assert conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone() == (1,)
        # The existing 384-d column is reused; rows 2 and 3 lack an embedding and are queued
        # (on the backfill lane: watch()'s initial enqueue is backfill work).
        keys = conn.execute(
            "SELECT jsonb_path_query_array(message, '$.keys[*]') FROM pgmq.q_embedding_jobs_backfill"
        ).fetchone()
        assert keys is not None and sorted(keys[0]) == [2, 3]


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
    with psycopg.connect(empty_dsn) as conn:
        conn.execute(
            "CREATE TEMP VIEW pg_available_extensions AS SELECT * FROM pg_catalog.pg_available_extensions WHERE name <> 'vector'"
        )
        conn.execute("SET search_path = pg_temp, pg_catalog, public")
        with pytest.raises(psycopg.errors.RaiseException, match="pgvector"):
            schema.install(conn)


def test_released_revisions_are_ancestors_of_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(schema.migrations_dir()))
    scripts = ScriptDirectory.from_config(config)
    chain = [s.revision for s in scripts.walk_revisions()]
    assert len(scripts.get_heads()) == 1
    assert set(schema.RELEASED_REVISIONS) <= set(chain)
    assert not set(chain) & (schema.SQUASHED_REVISIONS - {"0002"})  # main's old ids never reused
    for revision in schema.RELEASED_REVISIONS:  # `migrate` names the release of each
        assert schema.release_of(revision) != "unreleased"


@pytest.mark.parametrize("revision", schema.RELEASED_REVISIONS)
def test_released_revisions_are_frozen(revision: str) -> None:
    """A released revision's files never change: a database that applied it has exactly that
    schema. A change goes into the release revision still open (docs/development.md)."""
    assert schema.revision_digest(revision) == schema.RELEASED_REVISIONS[revision], (
        f"revision {revision} shipped in a release, and its files changed since"
    )


def test_sql_changes_after_a_release_go_into_a_new_revision() -> None:
    """Once the newest revision is released, it reinstalls its frozen copy, never sql/: an
    edit of sql/ would reach no database. The next release's revision (0019 for 0.3.0) comes
    with the first change (docs/development.md, "Schema changes")."""
    newest = sorted(p.stem for p in schema.versions_dir().glob("[0-9][0-9][0-9][0-9]_*.py"))[-1]
    if newest[:4] not in schema.RELEASED_REVISIONS:
        return  # an open release revision reinstalls sql/ itself
    frozen = {p.name: p.read_bytes() for p in schema.release_schema_files(newest)}
    current = {p.name: p.read_bytes() for p in schema.install_files()}
    changed = sorted(n for n in frozen.keys() | current.keys() if frozen.get(n) != current.get(n))
    assert changed == [], (
        f"sql/ changed after release revision {newest[:4]} froze: start the next release's "
        f"revision for {changed}"
    )


def test_0001_applies_its_own_copy_of_the_0_1_0_files() -> None:
    frozen = schema.revision_files("0001_initial")
    assert [p.name for p in frozen][:2] == ["00_extensions.sql", "10_schema.sql"]
    assert all(p.parent.name == "0001_initial" for p in frozen)


def test_a_release_revision_reinstalls_sql_until_it_is_frozen(tmp_path: Path) -> None:
    """Unreleased, a release revision reinstalls sql/; `make freeze-release` copies sql/ into
    its folder, which it reinstalls from then on, and gives the digest to pin. (0002 is
    released: its copy here without its frozen folder is the unreleased revision it was.)"""
    name = schema.revision_name("0002")
    released = schema.release_schema_files(name)
    assert released == sorted((schema.versions_dir() / name / "schema").glob("[0-9][0-9]_*.sql"))
    versions = tmp_path / "versions"
    shutil.copytree(
        schema.versions_dir() / name, versions / name, ignore=shutil.ignore_patterns("schema")
    )
    shutil.copy2(schema.versions_dir() / f"{name}.py", versions)
    assert schema.release_schema_files(name, versions) == schema.install_files()

    folder, digest = schema.freeze_release("0002", versions=versions)

    frozen = schema.release_schema_files(name, versions)
    assert frozen == sorted(folder.glob("*.sql"))
    assert [p.read_bytes() for p in frozen] == [p.read_bytes() for p in schema.install_files()]
    assert digest == schema.revision_digest("0002", versions)
    (folder / "40_watch.sql").write_text("-- changed after the release\n")
    assert schema.revision_digest("0002", versions) != digest  # what the frozen test catches
    with pytest.raises(exceptions.EmbedWorkerError, match="frozen already"):
        schema.freeze_release("0002", versions=versions)


def watch_docs(conn: psycopg.Connection[Any], role: str) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    conn.execute("INSERT INTO docs SELECT i, 'text ' || i FROM generate_series(1, 300) i")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
    conn.execute("INSERT INTO docs VALUES (301, 'late')")


QUEUED_KEYS = """
    SELECT m.message ->> 'target', k.key, 'live' FROM pgmq.q_embedding_jobs m,
           LATERAL embeddings.message_keys(m.message) AS k(key)
    UNION ALL
    SELECT m.message ->> 'target', k.key, 'backfill' FROM pgmq.q_embedding_jobs_backfill m,
           LATERAL embeddings.message_keys(m.message) AS k(key)
    UNION ALL
    SELECT i.target::text, k.key, 'inbox' FROM embeddings.inbox i,
           LATERAL embeddings.message_keys(jsonb_build_object('columns', i.columns)) AS k(key)
"""
# 0.1.0 queued into the live queue only, always in the "keys" shape.
QUEUED_KEYS_0_1_0 = """
    SELECT m.message ->> 'target', k.key, 'live' FROM pgmq.q_embedding_jobs m,
           LATERAL jsonb_array_elements(m.message -> 'keys') AS k(key)
"""


def queued_keys(conn: psycopg.Connection[Any]) -> list[tuple[str, Any, str]]:
    """Every row key waiting anywhere (queues, lane, inbox), with where."""
    old = conn.execute("SELECT to_regclass('embeddings.inbox') IS NULL").fetchone() == (True,)
    return sorted(conn.execute(QUEUED_KEYS_0_1_0 if old else QUEUED_KEYS).fetchall())


@pytest.fixture
def worker_role(cluster: Cluster) -> Any:
    role = f"embed_worker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE ROLE {role}_monitor")
    yield role
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"DROP ROLE IF EXISTS {role}_monitor")


@pytest.mark.parametrize("start", schema.RELEASED_REVISIONS)
def test_upgrade_keeps_jobs_failures_and_grants_and_equals_fresh_install(
    cluster: Cluster, start: str, worker_role: str
) -> None:
    """A database created at a released revision, with rows, queued jobs, dead letters, a
    worker role and a monitoring role's grant, upgraded to head: the schema of a fresh install,
    nothing queued or dead-lettered lost, the roles' rights kept or brought up to date."""
    upgraded = cluster.create_database(prefix="upgraded")
    fresh = cluster.create_database(prefix="fresh")
    monitor = f"{worker_role}_monitor"
    policies = (
        "SELECT string_agg(polcmd::text, '' ORDER BY polcmd) FROM pg_policy"
        " WHERE polrelid = 'docs'::regclass"
    )
    try:
        schema.migrate(cluster.dsn(upgraded), start)
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            watch_docs(conn, worker_role)
            conn.execute(
                "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message,"
                " attempts, last_error) SELECT id, 'public.docs.embedding', '7', 'embedding_jobs',"
                """ '{"target": 1, "keys": [7]}', 5, 'boom' FROM embeddings.targets"""
            )
            conn.execute(f"GRANT SELECT ON embeddings.status TO {monitor}")
            jobs_before = queued_keys(conn)
            if start == "0001":
                assert conn.execute(policies).fetchone() == ("*",)  # 0.1.0: one FOR ALL policy
        assert len(jobs_before) == 301

        upgrade = schema.migrate(cluster.dsn(upgraded))
        assert upgrade.applied == [r for r in ("0001", "0002", "0019") if r > start]
        with psycopg.connect(cluster.dsn(fresh)) as conn:
            schema.install(conn)
            conn.commit()
        with psycopg.connect(cluster.dsn(fresh), autocommit=True) as conn:
            watch_docs(conn, worker_role)  # the same user objects on both sides
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
                "SELECT has_table_privilege(%s, 'embeddings.status', 'SELECT')", (monitor,)
            ).fetchone()
            assert monitored == (True,)
        worker_dsn = make_conninfo(cluster.dsn(upgraded), user=worker_role)
        with psycopg.connect(worker_dsn) as worker_conn:  # the rights of 0.2.0's worker
            row = worker_conn.execute(
                "SELECT embeddings.lock_target_version(id) FROM embeddings.targets"
            ).fetchone()
            assert row == (1,)
            assert worker_conn.execute("SELECT embeddings.move_inbox('embedding_jobs')").fetchone()
    finally:
        cluster.drop_database(upgraded)
        cluster.drop_database(fresh)


def test_upgrade_gives_chunk_tables_their_offsets(cluster: Cluster) -> None:
    """Chunk tables of 0.2.0, one with full-text search, get start_offset and end_offset at
    their end, as fresh ones have them (watch() adds them after the tsvector); their chunks
    keep theirs NULL (until their document is embedded again)."""
    upgraded = cluster.create_database(prefix="upgraded")
    fresh = cluster.create_database(prefix="fresh")
    tables = (
        "CREATE TABLE docs (id bigint PRIMARY KEY, body text);"
        " SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2',"
        " chunk_tokens => 64);"
        " CREATE TABLE pages (id bigint PRIMARY KEY, body text);"
        " SELECT embeddings.watch('pages', 'body', model => 'all-MiniLM-L6-v2',"
        " chunk_tokens => 64, fts => 'english');"
    )
    try:
        schema.migrate(cluster.dsn(upgraded), "0002")
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            conn.execute(tables)
            conn.execute("SELECT embeddings.enable_fts('pages')")  # 0.2.0 ignored fts => here
            conn.execute(
                "INSERT INTO docs_chunks (id, seq, chunk, chunk_hash, embedding)"
                " VALUES (1, 0, 'a chunk', 'h', array_fill(0.1, ARRAY[384])::halfvec)"
            )
        assert schema.migrate(cluster.dsn(upgraded)).applied == ["0019"]
        assert schema.migrate(cluster.dsn(upgraded)).applied == []
        schema.migrate(cluster.dsn(fresh))
        with psycopg.connect(cluster.dsn(fresh), autocommit=True) as conn:
            conn.execute(tables)
        assert pg_dump_schema(cluster.dsn(upgraded)) == pg_dump_schema(cluster.dsn(fresh))
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            row = conn.execute("SELECT chunk, start_offset, end_offset FROM docs_chunks").fetchone()
            assert row == ("a chunk", None, None)
    finally:
        cluster.drop_database(upgraded)
        cluster.drop_database(fresh)


def watch_every_kind(conn: psycopg.Connection[Any]) -> None:
    """Targets of every kind 0.2.0 has, in the state a worker leaves them between batches: a
    chunked target with full-text search, a side-table target, a content-function target, and
    a plain target in the middle of a model change (shadow column, backfill queued)."""
    conn.execute("CREATE TABLE articles (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO articles SELECT i, repeat('words ', 50 * i) FROM generate_series(1, 5) i"
    )
    conn.execute(
        "SELECT embeddings.watch('articles', 'body', chunk_tokens => 32, chunk_overlap => 4,"
        " fts => 'english')"
    )
    # 0.2.0's watch() ignored fts => for a chunked target: turned on as its users had to.
    conn.execute(
        "SELECT embeddings.enable_fts('articles', 'english') FROM embeddings.targets"
        " WHERE source = 'articles'::regclass AND fts_config IS NULL"
    )
    conn.execute("CREATE TABLE notes (tenant int, id text, body text, PRIMARY KEY (tenant, id))")
    conn.execute("INSERT INTO notes VALUES (1, 'a', 'side one'), (2, 'b', 'side two')")
    conn.execute("SELECT embeddings.watch('notes', 'body', store => 'side', fts => 'simple')")
    conn.execute("CREATE TABLE events (id uuid PRIMARY KEY, title text, at date)")
    conn.execute(
        "CREATE FUNCTION event_text(e events) RETURNS text LANGUAGE sql STABLE"
        " AS $$ SELECT e.title || ' on ' || e.at $$"
    )
    conn.execute("INSERT INTO events VALUES (gen_random_uuid(), 'launch', '2026-11-23')")
    conn.execute("SELECT embeddings.watch('events', 'event_text')")
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20) i")
    conn.execute("SELECT embeddings.watch('items', 'body', model => 'gte-small')")
    conn.execute("SELECT embeddings.watch('items', 'body', model => 'all-MiniLM-L6-v2')")


def test_upgrade_from_0_2_0_with_every_kind_of_target_equals_fresh_install(
    cluster: Cluster,
) -> None:
    """0.2.0's chunk tables, side tables, full-text columns, content-function wrappers and a
    model change's shadow column, upgraded: the schema (the user's tables and the per-target
    functions included) of a fresh install that did the same, and no queued key lost."""
    upgraded = cluster.create_database(prefix="upgraded")
    fresh = cluster.create_database(prefix="fresh")
    try:
        schema.migrate(cluster.dsn(upgraded), "0002")
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            watch_every_kind(conn)
            jobs_before = queued_keys(conn)
            changing = conn.execute("SELECT count(*) FROM embeddings.model_changes").fetchone()
        assert changing == (1,)

        assert schema.migrate(cluster.dsn(upgraded)).applied == ["0019"]
        with psycopg.connect(cluster.dsn(fresh)) as conn:
            schema.install(conn)
            conn.commit()
        with psycopg.connect(cluster.dsn(fresh), autocommit=True) as conn:
            watch_every_kind(conn)
        assert pg_dump_schema(cluster.dsn(upgraded)) == pg_dump_schema(cluster.dsn(fresh))
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            assert queued_keys(conn) == jobs_before
            assert conn.execute("SELECT count(*) FROM embeddings.model_changes").fetchone() == (1,)
    finally:
        cluster.drop_database(upgraded)
        cluster.drop_database(fresh)
