"""A table dumped alone (`pg_dump -t`) carries its triggers, which name our functions by target
id; restored where that id is another table's target, they are strays: they must never make the
user's statement fail, nor queue or clear another table's rows. They warn, watch() of the table
drops them, and doctor names them (QA 5b, finding 1)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cluster import Cluster
from tests.support.jobs import messages, queued_keys
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
def restore_docs(dsn: str, other_dsn: str, tmp_path: Path) -> Callable[[], None]:
    """`pg_dump -t public.docs -Fc` of the first database, then `pg_restore` into the other,
    as the QA did (the server's own binaries)."""

    def restore() -> None:
        dump = tmp_path / "docs.dump"
        subprocess.run(
            [_server_binary("pg_dump"), "-Fc", "-t", "public.docs", "-f", str(dump), dsn],
            check=True,
            capture_output=True,
        )
        restored = subprocess.run(
            [_server_binary("pg_restore"), "-d", other_dsn, str(dump)],
            capture_output=True,
            text=True,
        )
        assert restored.returncode == 0, restored.stderr

    return restore


def warnings_of(conn: Conn) -> list[str]:
    found: list[str] = []
    conn.add_notice_handler(
        lambda d: found.append(d.message_primary or "") if d.severity == "WARNING" else None
    )
    return found


@pytest.fixture
def source(conn: Conn) -> Conn:
    """docs, watched as target 1 (with its clear trigger), with rows."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'doc ' || g FROM generate_series(1, 10) g")
    assert conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone() == (1,)
    return conn


def test_stray_triggers_of_another_target_never_fail_the_statement(
    source: Conn, other_db: Conn, restore_docs: Callable[[], None]
) -> None:
    other_db.execute("CREATE TABLE other (id bigint PRIMARY KEY, txt text)")
    other_db.execute("INSERT INTO other VALUES (1, 'o')")
    watched = other_db.execute(
        "SELECT embeddings.watch('other', 'txt', embedding_column => 'vec')"
    ).fetchone()
    assert watched == (1,)
    before = messages(other_db)

    restore_docs()
    warned = warnings_of(other_db)
    other_db.execute("UPDATE docs SET body = 'x' WHERE id = 7")
    other_db.execute("INSERT INTO docs VALUES (2000, 'y')")
    other_db.execute("DELETE FROM docs WHERE id = 2000")

    assert messages(other_db) == before  # nothing queued for public.other
    assert any(
        "embeddings_1_" in w and "public.docs" in w and "public.other" in w for w in warned
    ), warned


def test_stray_triggers_whose_columns_match_queue_and_clear_nothing(
    source: Conn, other_db: Conn, restore_docs: Callable[[], None]
) -> None:
    """Columns of the same names: the stray functions would run, queueing docs' keys as
    public.other's and clearing docs' vectors."""
    source.execute("UPDATE docs SET embedding = array_fill(0.5, ARRAY[384])::halfvec")
    other_db.execute("CREATE TABLE other (id bigint PRIMARY KEY, body text)")
    other_db.execute("INSERT INTO other VALUES (1, 'o')")
    assert other_db.execute("SELECT embeddings.watch('other', 'body')").fetchone() == (1,)
    restore_docs()
    before = queued_keys(other_db, 1)

    other_db.execute("UPDATE docs SET body = 'changed' WHERE id = 5")
    other_db.execute("INSERT INTO docs VALUES (3000, 'new')")

    assert queued_keys(other_db, 1) == before
    kept = other_db.execute("SELECT embedding IS NOT NULL FROM docs WHERE id = 5").fetchone()
    assert kept == (True,)


def test_watch_drops_stray_triggers_and_the_table_is_served(
    source: Conn, other_db: Conn, restore_docs: Callable[[], None]
) -> None:
    other_db.execute("CREATE TABLE other (id bigint PRIMARY KEY, txt text)")
    other_db.execute("SELECT embeddings.watch('other', 'txt', embedding_column => 'vec')")
    restore_docs()

    docs = other_db.execute("SELECT embeddings.watch('docs', 'body')").fetchone()
    assert docs == (2,)
    triggers = other_db.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND NOT tgisinternal"
        " ORDER BY 1"
    ).fetchall()
    assert [t[0] for t in triggers] == [
        "embeddings_2_clear",
        "embeddings_2_insert",
        "embeddings_2_update",
    ]

    other_db.execute("INSERT INTO docs VALUES (2000, 'y')")
    assert 2000 in queued_keys(other_db, 2)
    assert 2000 not in queued_keys(other_db, 1)


def test_watch_drops_triggers_of_a_target_that_does_not_exist(
    source: Conn, other_db: Conn, restore_docs: Callable[[], None]
) -> None:
    other_db.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    other_db.execute(
        "CREATE FUNCTION embeddings.embeddings_7_insert() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'stray'; END $$"
    )
    other_db.execute(
        "CREATE TRIGGER embeddings_7_insert AFTER INSERT ON docs"
        " FOR EACH STATEMENT EXECUTE FUNCTION embeddings.embeddings_7_insert()"
    )

    other_db.execute("SELECT embeddings.watch('docs', 'body')")

    names = other_db.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND tgname LIKE 'embeddings_7_%'"
    ).fetchall()
    assert names == []
    other_db.execute("INSERT INTO docs VALUES (1, 'a')")


def test_doctor_names_stray_triggers_and_policies(
    other_dsn: str, other_db: Conn, restore_docs: Callable[[], None], source: Conn
) -> None:
    """A chunk table dumped alone brings its policy too, bound to this database's visibility
    function of that target id (another table's): stray_store stands for one."""
    other_db.execute("CREATE TABLE other (id bigint PRIMARY KEY, body text)")
    other_db.execute("SELECT embeddings.watch('other', 'body')")
    other_db.execute("CREATE TABLE chunked (id bigint PRIMARY KEY, body text)")
    other_db.execute("SELECT embeddings.watch('chunked', 'body', chunk_tokens => 64)")
    other_db.execute("CREATE TABLE stray_store (id bigint, seq integer)")
    other_db.execute("ALTER TABLE stray_store ENABLE ROW LEVEL SECURITY")
    other_db.execute(
        "CREATE POLICY embeddings_2_visible ON stray_store USING (EXISTS"
        " (SELECT FROM embeddings.embeddings_2_visible() v WHERE v.k0 = stray_store.id))"
    )
    restore_docs()

    found = doctor.check(other_dsn, Settings(database_url=other_dsn))

    strays = {f.check: f for f in found if " on public." in f.check}
    assert set(strays) == {
        "trigger embeddings_1_insert on public.docs",
        "trigger embeddings_1_update on public.docs",
        "trigger embeddings_1_clear on public.docs",
        "policy embeddings_2_visible on public.stray_store",
    }
    said = strays["trigger embeddings_1_clear on public.docs"]
    assert said.level == "FAIL" and "target 1, which watches public.other" in said.detail
    assert said.fix.endswith("DROP TRIGGER embeddings_1_clear ON public.docs")


def test_watch_again_of_a_watched_table_drops_stray_triggers(other_db: Conn) -> None:
    """A table restored over a watched one of the same name (pg_restore goes on past its
    CREATE TABLE) gets the dump's triggers beside its own: watch() of it, which changes nothing
    else, drops them, as doctor's fix says."""
    other_db.execute("CREATE TABLE other (id bigint PRIMARY KEY, txt text)")
    other_db.execute("SELECT embeddings.watch('other', 'txt', embedding_column => 'vec')")
    other_db.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    assert other_db.execute("SELECT embeddings.watch('docs', 'body')").fetchone() == (2,)
    other_db.execute(
        "CREATE TRIGGER embeddings_1_insert AFTER INSERT ON docs REFERENCING NEW TABLE AS new_rows"
        " FOR EACH STATEMENT EXECUTE FUNCTION embeddings.embeddings_1_insert()"
    )

    assert other_db.execute("SELECT embeddings.watch('docs', 'body')").fetchone() == (2,)

    names = other_db.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND NOT tgisinternal"
        " ORDER BY 1"
    ).fetchall()
    assert [n[0] for n in names] == [
        "embeddings_2_clear",
        "embeddings_2_insert",
        "embeddings_2_update",
    ]
