"""A login that may CREATE in a watched table's schema makes the side or chunk table first, under
the name watch() would pick, with its own trigger and a grant to PUBLIC (issue 36 §1). watch()
must not adopt it: the worker's writes through the owner's functions would fire the squatter's
trigger with the owner's rights (a superuser's, here), and the squatter could read every vector
and chunk afterwards. And the schema of our internals, made first by a role that may create
schemas, or one that others may create in: migrate refuses it; likewise `embeddings` itself."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.security.conftest import Roles, contained
from tests.support.models import MINILM
from worker import schema
from worker.process.runner import Worker

# The store's shape as watch() makes it (sql/56_side.sql, sql/55_chunks.sql), for MiniLM's 384
# dimensions and an integer key, so that only who made it tells it apart.
SHAPES = {
    "side": (
        "docs_embeddings",
        "CREATE TABLE docs_embeddings (id integer PRIMARY KEY, embedding halfvec(384),"
        " content_md5 text NOT NULL)",
        ", store => 'side'",
    ),
    "chunks": (
        "docs_chunks",
        "CREATE TABLE docs_chunks (id integer NOT NULL, seq integer NOT NULL, chunk text NOT NULL,"
        " chunk_hash text NOT NULL, embedding halfvec(384) NOT NULL, PRIMARY KEY (id, seq))",
        ", chunk_tokens => 64",
    ),
}

SQUAT = """
CREATE FUNCTION squat() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.payload(); RETURN NULL; END $$;
CREATE TRIGGER squat AFTER INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION squat();
GRANT ALL ON {table} TO PUBLIC;
"""


def _superusers_docs(roles: Roles) -> None:
    with roles.connect() as su:
        su.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text)")
        su.execute("INSERT INTO docs SELECT g, 'text ' || g FROM generate_series(1, 3) g")


def _superusers_docs_to_watch(roles: Roles, store: str) -> tuple[str, str]:
    """The superuser's docs, not yet watched: the name of the `store` kind's table that watch()
    makes, and the watch() statement (its model a parameter)."""
    table, _, option = SHAPES[store]
    _superusers_docs(roles)
    return table, f"SELECT embeddings.watch('docs', 'body', model => %s{option})"


@pytest.mark.parametrize("store", sorted(SHAPES))
def test_watch_never_adopts_a_store_table_someone_else_made(
    roles: Roles, run_once: Callable[..., Worker], store: str
) -> None:
    table, shape, option = SHAPES[store]
    _superusers_docs(roles)
    with roles.connect(roles.tenant) as squatter:
        squatter.execute("SET search_path = public, " + roles.tenant)
        squatter.execute(shape)
        squatter.execute(SQUAT.format(table=table).encode())
    with roles.connect() as su, pytest.raises(psycopg.errors.DuplicateTable) as refused:
        su.execute(f"SELECT embeddings.watch('docs', 'body', model => %s{option})", (MINILM,))
    assert "did not make it" in str(refused.value)
    hint = refused.value.diag.message_hint or ""
    assert f"{'side_table' if store == 'side' else 'chunk_table'} =>" in hint
    assert f"drop public.{table}" in hint
    run_once(database_url=roles.worker_dsn)
    assert contained(roles) == []  # nothing of the squatter's ran, as anyone
    with roles.connect() as su:
        assert su.execute(
            "SELECT owner_of FROM (SELECT pg_get_userbyid(relowner) AS owner_of"
            " FROM pg_class WHERE relname = %s) o",
            (table,),
        ).fetchone() == (roles.tenant,)  # still the squatter's: nothing was given away


@pytest.mark.parametrize("store", sorted(SHAPES))
def test_a_store_kept_by_unwatch_is_taken_back_only_from_the_tables_owner(
    roles: Roles, store: str
) -> None:
    """unwatch() keeps the store and watch() again takes it back, as documented; but not once it
    belongs to someone other than the table's owner (who could have added triggers since)."""
    table, watch = _superusers_docs_to_watch(roles, store)
    with roles.connect() as su:
        su.execute(watch, (MINILM,))
        su.execute("SELECT embeddings.unwatch('docs')")
        if store == "side":
            pass
        else:
            su.execute("ALTER TABLE docs DROP COLUMN IF EXISTS embedding")
        su.execute(watch, (MINILM,))  # taken back
        su.execute("SELECT embeddings.unwatch('docs')")
        su.execute(f"ALTER TABLE {table} OWNER TO {roles.tenant}")
        with pytest.raises(psycopg.errors.DuplicateTable, match="now owned by"):
            su.execute(watch, (MINILM,))


@pytest.mark.parametrize("store", sorted(SHAPES))
def test_a_store_left_by_a_dropped_table_is_taken_back_by_its_successor(
    roles: Roles, store: str
) -> None:
    """DROP TABLE, CREATE TABLE of the same name, watch() again: the store it left is ours, and
    the table's owner's, so it serves the new table (as before made_tables)."""
    table, watch = _superusers_docs_to_watch(roles, store)
    with roles.connect() as su:
        su.execute(watch, (MINILM,))
        su.execute("DROP TABLE docs")
        su.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text)")
        su.execute(watch, (MINILM,))
        stored = su.execute(
            "SELECT coalesce(side_table, chunk_table)::text FROM embeddings.targets"
            " WHERE source = 'docs'::regclass"
        ).fetchone()
    assert stored == (table,)


@pytest.fixture
def squatter(empty_dsn: str) -> Iterator[str]:
    """A login that may create schemas in the database (GRANT CREATE ON DATABASE)."""
    name = f"squatter_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        su.execute(f"CREATE ROLE {name} LOGIN")
        database = su.execute("SELECT current_database()").fetchone()
        assert database is not None
        su.execute(f'GRANT CREATE ON DATABASE "{database[0]}" TO {name}')
    yield name
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        su.execute(f"DROP OWNED BY {name} CASCADE")
        su.execute(f"DROP ROLE {name}")


# Each of our schemas, made first by a role that may create schemas, with a function of ours
# in it: adopted, its owner could drop and replace our code, which runs as the migrator and
# inside every watched table's triggers.
SCHEMA_SQUATS = {
    "embeddings": """
CREATE SCHEMA embeddings;
CREATE FUNCTION embeddings.backfill_step_keys() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
""",
    "embeddings_internal": """
CREATE SCHEMA embeddings_internal;
CREATE FUNCTION embeddings_internal.render(template text, args jsonb) RETURNS text
LANGUAGE sql AS $$ SELECT 'squatted' $$;
""",
}


@pytest.mark.parametrize("squatted", sorted(SCHEMA_SQUATS))
def test_migrate_refuses_a_schema_of_ours_someone_else_made_first(
    empty_dsn: str, squatter: str, squatted: str
) -> None:
    """One of our schemas, made first by a role that may create schemas: migrate stops,
    naming its owner, and installs nothing."""
    with psycopg.connect(make_conninfo(empty_dsn, user=squatter), autocommit=True) as conn:
        conn.execute(SCHEMA_SQUATS[squatted].encode())
    with pytest.raises(psycopg.errors.DuplicateSchema, match=f"its owner is {squatter}"):
        schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        found = su.execute(
            "SELECT to_regproc('embeddings.watch'), to_regclass('public.embed_worker_alembic_version')"
        ).fetchone()
        assert found == (None, None)


def test_migrate_accepts_an_embeddings_schema_its_installer_made(empty_dsn: str) -> None:
    """A schema made beforehand by the installer itself (a DBA preparing the database) is
    ours: migrate installs into it."""
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        su.execute("CREATE SCHEMA embeddings")
    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        found = su.execute("SELECT to_regproc('embeddings.watch') IS NOT NULL").fetchone()
        assert found == (True,)


@pytest.mark.parametrize("squatted", sorted(SCHEMA_SQUATS))
def test_migrate_refuses_a_schema_of_ours_others_may_create_in(
    empty_dsn: str, squatter: str, squatted: str
) -> None:
    """Installed, then someone is given CREATE on one of our schemas: the next migrate (an
    upgrade reinstalls the code) stops before anything of theirs could be called."""
    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        su.execute(f"GRANT CREATE ON SCHEMA {squatted} TO {squatter}")
        with su.transaction():
            with pytest.raises(psycopg.errors.DuplicateSchema, match=f"{squatter}"):
                schema.install(su)
            raise psycopg.Rollback()
