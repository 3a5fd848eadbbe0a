"""What the upgrade tests put in a database before upgrading it, and read back after: each
scenario runs at a release (fixtures/make_at_release.py, whose dumps the tests restore) and on a
fresh install (the tests), so that both sides hold the same user objects."""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from tests.support.cluster import Cluster

Conn = psycopg.Connection[Any]

# The fixtures' roles (roles are not in a database's dump: the tests create them).
ROLE = "embed_worker_fixture"
MONITOR = f"{ROLE}_monitor"


def watch_docs(conn: Conn, role: str = ROLE) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    conn.execute("INSERT INTO docs SELECT i, 'text ' || i FROM generate_series(1, 300) i")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
    conn.execute("INSERT INTO docs VALUES (301, 'late')")


def jobs_failures_and_grants(conn: Conn) -> None:
    """Rows, queued jobs, a dead letter, a worker role and a monitoring role's grant."""
    watch_docs(conn)
    conn.execute(
        "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message,"
        " attempts, last_error) SELECT id, 'public.docs.embedding', '7', 'embedding_jobs',"
        """ '{"target": 1, "keys": [7]}', 5, 'boom' FROM embeddings.targets"""
    )
    conn.execute(f"GRANT SELECT ON embeddings.status TO {MONITOR}")


CHUNK_TABLES = (
    "CREATE TABLE docs (id bigint PRIMARY KEY, body text);"
    " SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2',"
    " chunk_tokens => 64);"
    " CREATE TABLE pages (id bigint PRIMARY KEY, body text);"
    " SELECT embeddings.watch('pages', 'body', model => 'all-MiniLM-L6-v2',"
    " chunk_tokens => 64, fts => 'english');"
)


def chunk_tables_at_0_2_0(conn: Conn) -> None:
    """0.2.0's chunk tables, one with full-text search, one holding a chunk."""
    conn.execute(CHUNK_TABLES)
    conn.execute("SELECT embeddings.enable_fts('pages')")  # 0.2.0 ignored fts => here
    conn.execute(
        "INSERT INTO docs_chunks (id, seq, chunk, chunk_hash, embedding)"
        " VALUES (1, 0, 'a chunk', 'h', array_fill(0.1, ARRAY[384])::halfvec)"
    )


def watch_every_kind(conn: Conn) -> None:
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
    conn.execute(
        "INSERT INTO events VALUES ('2b9a1c3e-7f00-4c1a-9d0e-000000000001', 'launch', '2026-11-23')"
    )
    conn.execute("SELECT embeddings.watch('events', 'event_text')")
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20) i")
    conn.execute("SELECT embeddings.watch('items', 'body', model => 'gte-small')")
    conn.execute("SELECT embeddings.watch('items', 'body', model => 'all-MiniLM-L6-v2')")


def watch_every_kind_0_3_0(conn: Conn) -> None:
    """Every kind 0.2.0 has (watch_every_kind), and the document targets 0.3.0 added: a bytea
    column of files and a text column read as Markdown, both chunked."""
    watch_every_kind(conn)
    conn.execute("CREATE TABLE files (id bigint PRIMARY KEY, name text, body bytea)")
    conn.execute(
        "INSERT INTO files VALUES (1, 'a.md', convert_to('# Title\n\nsome words here', 'UTF8'))"
    )
    conn.execute(
        "SELECT embeddings.watch('files', 'body', chunk_tokens => 64, chunk_overlap => 8,"
        " fts => 'english')"
    )
    conn.execute("CREATE TABLE pages (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO pages VALUES (1, '# Heading\n\nA paragraph of text.')")
    conn.execute(
        "SELECT embeddings.watch('pages', 'body', chunk_tokens => 64, chunk_overlap => 0,"
        " format => 'markdown')"
    )


QUEUED_KEYS = """
    SELECT m.message ->> 'target', k.key, 'live' FROM pgmq.q_embedding_jobs m,
           LATERAL {internals}.message_keys(m.message) AS k(key)
    UNION ALL
    SELECT m.message ->> 'target', k.key, 'backfill' FROM pgmq.q_embedding_jobs_backfill m,
           LATERAL {internals}.message_keys(m.message) AS k(key)
    UNION ALL
    SELECT i.target::text, k.key, 'inbox' FROM embeddings.inbox i,
           LATERAL {internals}.message_keys(jsonb_build_object('columns', i.columns)) AS k(key)
"""
# 0.1.0 queued into the live queue only, always in the "keys" shape.
QUEUED_KEYS_0_1_0 = """
    SELECT m.message ->> 'target', k.key, 'live' FROM pgmq.q_embedding_jobs m,
           LATERAL jsonb_array_elements(m.message -> 'keys') AS k(key)
"""


def queued_keys(conn: Conn) -> list[tuple[str, Any, str]]:
    """Every row key waiting anywhere (queues, lane, inbox), with where."""
    old = conn.execute("SELECT to_regclass('embeddings.inbox') IS NULL").fetchone() == (True,)
    # Releases before 0.4.0 kept their internals in schema embeddings.
    moved = conn.execute("SELECT to_regnamespace('embeddings_internal') IS NOT NULL").fetchone()
    internals = "embeddings_internal" if moved == (True,) else "embeddings"
    query = QUEUED_KEYS_0_1_0 if old else QUEUED_KEYS.format(internals=internals)
    return sorted(conn.execute(query).fetchall())


# Each fixture: the release revision it is at, and what was done there (make_at_release.py).
AT_RELEASE = {
    "at_0001": ("0001", jobs_failures_and_grants),
    "at_0002": ("0002", jobs_failures_and_grants),
    "at_0002_chunk_tables": ("0002", chunk_tables_at_0_2_0),
    "at_0002_every_kind": ("0002", watch_every_kind),
    "at_0019": ("0019", jobs_failures_and_grants),
    "at_0019_every_kind": ("0019", watch_every_kind_0_3_0),
}


FIXTURES = Path(__file__).parent / "fixtures"


def restore(cluster: Cluster, fixture: str) -> str:
    """A new database holding fixtures/<fixture>.sql.gz (its roles must exist); its name."""
    name = cluster.create_database(prefix=fixture.replace("_", ""))
    server_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))
    subprocess.run(
        [str(server_bin[-1]) if server_bin else "psql", "-q", "-v", "ON_ERROR_STOP=1",
         "-o", "/dev/null", cluster.dsn(name)],
        input=gzip.decompress((FIXTURES / f"{fixture}.sql.gz").read_bytes()),
        check=True,
        capture_output=True,
    )  # fmt: skip
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        # worker_roles keeps role oids (0.2.0 on), which are the maker's cluster's: as a
        # restore into another cluster needs, they are looked up again by name.
        conn.execute(
            "DO $$ BEGIN IF EXISTS (SELECT FROM pg_attribute WHERE attname = 'role_id'"
            " AND attrelid = to_regclass('embeddings.worker_roles')) THEN"
            " UPDATE embeddings.worker_roles w SET role_id = r.oid FROM pg_roles r"
            " WHERE r.rolname = w.role_name; END IF; END $$"
        )
    return name


@contextmanager
def fixture_roles(cluster: Cluster) -> Iterator[None]:
    """ROLE and MONITOR, for as long as a test uses a fixture that grants to them."""
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        for role, login in ((ROLE, " LOGIN"), (MONITOR, "")):
            if not admin.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                admin.execute(f"CREATE ROLE {role}{login}")
    try:
        yield
    finally:
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
            for role in (MONITOR, ROLE):
                admin.execute(f"DROP ROLE IF EXISTS {role}")
