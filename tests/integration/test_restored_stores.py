"""A side or chunk table dumped alone (`pg_dump -t`) carries its row-level security and its
policy, which calls our visibility function by target id. Restored over a store of this
database, the policy is bound to another target's function: permissive policies are ORed, so
it shows the store's rows by another table's rows; watch() drops it (never a user's own
policy) and doctor names it. Restored where that function does not exist, the table keeps row
-level security and no policy, so no searcher sees a row: doctor says so (QA restore2, findings
1 and 2)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cluster import Cluster
from worker.cli import doctor
from worker.config import Settings

Conn = psycopg.Connection[Any]


def _server_binary(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else name


@pytest.fixture
def other_dsn(cluster: Cluster, template_db: str) -> Iterator[str]:
    """A second migrated database, where the dump is restored."""
    name = cluster.create_database(template=template_db)
    yield cluster.dsn(name)
    cluster.drop_database(name)


@pytest.fixture
def other_db(other_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(other_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def source(conn: Conn) -> Conn:
    """docs, chunked, watched as target 1 (its store public.docs_chunks, with its policy)."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', chunk_tokens => 64)")
    conn.execute(
        "INSERT INTO docs_chunks (id, seq, chunk, chunk_hash, embedding)"
        " VALUES (1, 0, 'one', 'h', array_fill(0.5, ARRAY[384])::halfvec)"
    )
    return conn


@pytest.fixture
def restore_chunks(dsn: str, other_dsn: str, tmp_path: Path) -> Callable[[], str]:
    """`pg_dump -t public.docs_chunks -Fc` of the first database, `pg_restore` into the other
    (which goes on past the statements that fail); returns what it said."""

    def restore() -> str:
        dump = tmp_path / "chunks.dump"
        subprocess.run(
            [_server_binary("pg_dump"), "-Fc", "-t", "public.docs_chunks", "-f", str(dump), dsn],
            check=True,
            capture_output=True,
        )
        restored = subprocess.run(
            [_server_binary("pg_restore"), "-d", other_dsn, str(dump)],
            capture_output=True,
            text=True,
        )
        return restored.stderr

    return restore


def policies(conn: Conn, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT polname FROM pg_policy WHERE polrelid = %s::regclass ORDER BY 1", (table,)
    ).fetchall()
    return [r[0] for r in rows]


def test_watch_drops_a_restored_policy_of_another_target_and_keeps_a_users_own(
    source: Conn, other_dsn: str, other_db: Conn, restore_chunks: Callable[[], str]
) -> None:
    other_db.execute("CREATE TABLE other (id bigint PRIMARY KEY, body text)")
    other_db.execute("SELECT embeddings.watch('other', 'body', chunk_tokens => 64)")  # target 1
    other_db.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    other_db.execute("SELECT embeddings.watch('docs', 'body', chunk_tokens => 64)")  # target 2
    # A policy of the user's that happens to be named as ours calls nothing of ours: kept.
    other_db.execute("CREATE POLICY embeddings_7_visible ON docs_chunks USING (seq < 0)")

    said = restore_chunks()  # over the existing table: its CREATE TABLE fails, the policy not

    assert "already exists" in said
    assert policies(other_db, "docs_chunks") == [
        "embeddings_1_visible",
        "embeddings_2_visible",
        "embeddings_7_visible",
    ]
    found = doctor.check(other_dsn, Settings(database_url=other_dsn))
    strays = [f for f in found if f.check.startswith("policy ")]
    assert [f.check for f in strays] == ["policy embeddings_1_visible on public.docs_chunks"]
    assert "target 1, which watches public.other" in strays[0].detail
    assert "embeddings.watch() drops such policies" in strays[0].fix

    notices: list[str] = []
    other_db.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    other_db.execute("SELECT embeddings.watch('docs', 'body', chunk_tokens => 64)")

    assert policies(other_db, "docs_chunks") == ["embeddings_2_visible", "embeddings_7_visible"]
    assert any("dropped policy embeddings_1_visible on public.docs_chunks" in n for n in notices), (
        notices
    )
    # The other target's own policy stays where it belongs.
    assert policies(other_db, "other_chunks") == ["embeddings_1_visible"]
    found = doctor.check(other_dsn, Settings(database_url=other_dsn))
    assert not [f for f in found if f.check.startswith("policy ")]


def test_doctor_names_a_restored_store_without_its_policy(
    source: Conn, other_dsn: str, other_db: Conn, restore_chunks: Callable[[], str]
) -> None:
    """Where target 1 has no visibility function, the policy fails to restore: the table keeps
    row-level security and shows no one but its owner a row."""
    said = restore_chunks()

    assert "embeddings.embeddings_1_visible() does not exist" in said, said
    assert policies(other_db, "docs_chunks") == []
    found = doctor.check(other_dsn, Settings(database_url=other_dsn))
    named = [f for f in found if f.check == "store public.docs_chunks"]
    assert len(named) == 1, found
    assert named[0].level == "warn"
    assert "no target here uses it" in named[0].detail
    assert named[0].fix.startswith("DROP TABLE public.docs_chunks, then watch")


def test_doctor_names_a_targets_store_whose_policy_was_dropped(source: Conn, dsn: str) -> None:
    found = doctor.check(dsn, Settings(database_url=dsn))
    assert not [f for f in found if f.check.startswith("store ")]

    source.execute("DROP POLICY embeddings_1_visible ON docs_chunks")

    found = doctor.check(dsn, Settings(database_url=dsn))
    named = [f for f in found if f.check == "store public.docs_chunks"]
    assert len(named) == 1 and named[0].level == "FAIL", found
    assert "search, which reads it with the searcher's rights, finds none" in named[0].detail
    assert named[0].fix.startswith(
        "ALTER TABLE public.docs_chunks ENABLE ROW LEVEL SECURITY: any ALTER TABLE of it makes"
    )
    source.execute("ALTER TABLE public.docs_chunks ENABLE ROW LEVEL SECURITY")
    found = doctor.check(dsn, Settings(database_url=dsn))
    assert not [f for f in found if f.check.startswith("store ")]
