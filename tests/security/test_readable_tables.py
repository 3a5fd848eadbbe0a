"""What roles granted nothing of ours may read, against what docs/security.md says: `PUBLIC`,
and every role built into Postgres (`pg_monitor`, `pg_read_all_stats`, ...: what monitoring
agents such as postgres_exporter are given), found in `pg_roles` rather than listed here. They
read the registry and progress tables the docs name, and nothing that holds row keys or
content: neither our tables in schema `embeddings`, nor the queues and archives pgmq made for
us (pgmq grants `pg_monitor` each one it creates), nor the side and chunk tables `watch()`
made. `pg_read_all_data` reads every table by design, and the docs say so."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.cluster import REPO
from tests.support.login_roles import login_role
from tests.support.models import MINILM

Conn = psycopg.Connection[Any]

SECURITY = REPO / "docs" / "security.md"
# The paragraph of docs/security.md that names them.
PARAGRAPH = re.compile(
    r"No table or view of ours that holds row keys or content is readable by.*?\n\n", re.S
)
READS_EVERYTHING = "pg_read_all_data"  # by design: every table of the database

# Every relation that could be read: ours, the pgmq tables of every queue of ours, and the
# stores watch() made.
RELATIONS = """
SELECT c.oid::regclass::text FROM pg_class c
WHERE c.relkind IN ('r', 'v', 'p', 'm')
  AND (c.relnamespace IN ('embeddings'::regnamespace, 'embeddings_internal'::regnamespace)
       OR c.oid IN (SELECT m.store FROM embeddings.made_tables m)
       OR c.oid IN (SELECT t.store_table FROM embeddings.targets t WHERE t.store_table <> t.source)
       OR (c.relnamespace = 'pgmq'::regnamespace
           AND c.relname IN (SELECT pgmq.format_table_name(q.name, kind)
                             FROM embeddings.queues q, unnest(ARRAY['q', 'a']) AS kind)))
"""
READABLE = f"""
SELECT r.name FROM ({RELATIONS}) AS r(name)
WHERE has_table_privilege(%(grantee)s, r.name, 'SELECT')
   OR has_any_column_privilege(%(grantee)s, r.name, 'SELECT')
"""


def _documented() -> set[str]:
    found = PARAGRAPH.search(SECURITY.read_text())
    assert found, "docs/security.md says which of our tables PUBLIC may read"
    readable = found.group(0).split(" are, and hold neither")[0]
    # A table named "`x` only by ..." is said not to be PUBLIC's.
    return set(re.findall(r"`([a-z_]+)`", readable)) - set(
        re.findall(r"`([a-z_]+)` only by", readable)
    )


def built_in_roles(conn: Conn) -> list[str]:
    """The roles Postgres itself makes (oids below FirstNormalObjectId), but superusers."""
    return [
        name
        for (name,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE oid < 16384 AND NOT rolsuper ORDER BY 1"
        )
    ]


@pytest.fixture
def stores(conn: Conn) -> Conn:
    """A target of each store kind, one on a queue of its own (pgmq creates its tables when
    watch() asks), with a job queued and one archived in each queue."""
    conn.execute("CREATE TABLE docs_row (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE docs_side (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE docs_chunked (id int PRIMARY KEY, body text)")
    for table in ("docs_row", "docs_side", "docs_chunked"):
        conn.execute(f"INSERT INTO {table} VALUES (1, 'a secret text')")
    conn.execute("SELECT embeddings.watch('docs_row', 'body', model => %s)", (MINILM,))
    conn.execute(
        "SELECT embeddings.watch('docs_side', 'body', model => %s, store => 'side',"
        " queue => 'tenant_jobs')",
        (MINILM,),
    )
    conn.execute(
        "SELECT embeddings.watch('docs_chunked', 'body', model => %s, chunk_tokens => 16)",
        (MINILM,),
    )
    for (queue,) in conn.execute("SELECT name FROM embeddings.queues").fetchall():
        conn.execute('SELECT pgmq.send(%s, \'{"target": 1, "keys": [42]}\')', (queue,))
        conn.execute(
            'SELECT pgmq.archive(%s, (SELECT pgmq.send(%s, \'{"target": 1, "keys": [43]}\')))',
            (queue, queue),
        )
    return conn


def test_the_tables_checked_include_every_queue_archive_and_store(stores: Conn) -> None:
    checked = {name for (name,) in stores.execute(RELATIONS)}
    for queue in (
        "embedding_jobs",
        "embedding_jobs_backfill",
        "tenant_jobs",
        "tenant_jobs_backfill",
    ):
        assert {f"pgmq.q_{queue}", f"pgmq.a_{queue}"} <= checked
    assert {"docs_side_embeddings", "docs_chunked_chunks", "embeddings.failures"} <= checked


def test_roles_granted_nothing_read_exactly_the_tables_the_docs_name(stores: Conn) -> None:
    grantees = ["public", *(r for r in built_in_roles(stores) if r != READS_EVERYTHING)]
    assert "pg_monitor" in grantees and "pg_read_all_stats" in grantees
    readable = {
        grantee: {name for (name,) in stores.execute(READABLE, {"grantee": grantee})}
        for grantee in grantees
    }
    documented = {f"embeddings.{name}" for name in _documented()}
    wrong = {g: (sorted(r - documented), sorted(documented - r)) for g, r in readable.items()}
    assert {
        g: extra_missing for g, extra_missing in wrong.items() if extra_missing != ([], [])
    } == {}


def test_the_docs_say_pg_read_all_data_reads_everything(conn: Conn) -> None:
    assert READS_EVERYTHING in built_in_roles(conn)
    found = PARAGRAPH.search(SECURITY.read_text())
    assert found and f"`{READS_EVERYTHING}`" in found.group(0)


def test_public_reads_no_column_of_the_models_registry(conn: Conn) -> None:
    row = conn.execute(
        "SELECT has_any_column_privilege('public', 'embeddings.models', 'SELECT')"
    ).fetchone()
    assert row == (False,)


@pytest.fixture
def monitor(conn: Conn, dsn: str) -> Iterator[str]:
    """A login that is a member of pg_monitor only, as a monitoring agent is set up."""
    with login_role(conn, dsn, "monitor", "pg_monitor") as monitor_dsn:
        yield monitor_dsn


@pytest.mark.parametrize(
    "table",
    [
        "pgmq.q_embedding_jobs",
        "pgmq.a_embedding_jobs",
        "pgmq.q_embedding_jobs_backfill",
        "pgmq.a_embedding_jobs_backfill",
        "pgmq.q_tenant_jobs",  # made by watch(queue => ...) after the install
        "pgmq.a_tenant_jobs_backfill",
        "embeddings.failures",
    ],
)
def test_a_monitoring_login_reads_no_queued_or_dead_lettered_key(
    stores: Conn, monitor: str, table: str
) -> None:
    with psycopg.connect(monitor) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"SELECT message FROM {table}")


def test_no_built_in_role_nor_public_can_be_made_a_worker_role(stores: Conn, monitor: str) -> None:
    """grant_worker() of one would make every member a worker role (a monitoring agent's login,
    any database owner's): able to read rows' content through the targets' functions, the
    queues' keys and the dead letters. Refused, granting nothing."""
    for role in [*built_in_roles(stores), "public"]:
        with pytest.raises(psycopg.errors.ReservedName, match="cannot be a worker role"):
            stores.execute("SELECT embeddings.grant_worker(%s)", (role,))
    assert stores.execute("SELECT count(*) FROM embeddings.worker_roles").fetchone() == (0,)
    # (the targets' searches are PUBLIC's: they run as their caller)
    granted = stores.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE (p.oid = ANY (embeddings.worker_functions()) OR p.proname ~ '^embeddings_[0-9]+_')"
        "   AND has_function_privilege('pg_monitor', p.oid, 'EXECUTE')"
        "   AND NOT has_function_privilege('public', p.oid, 'EXECUTE')"
    ).fetchall()
    assert granted == []
    with psycopg.connect(monitor) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM embeddings.failures")
