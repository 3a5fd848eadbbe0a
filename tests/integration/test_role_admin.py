"""Role and schema administration never break the application's writes (issue 24 §4).

A table owner (no superuser) owns schema `app`, its watched table and the table's content
function; an application role writes the table; the worker runs as a least-privilege role.
Then an administrator does what administrators do: retires the owner (REASSIGN OWNED, DROP
OWNED, DROP ROLE), gives the table or the function to another role, revokes what PUBLIC may do
in our schema, renames roles and the schema. After each, the application's INSERT and UPDATE
must succeed, and the worker must embed every row, or, where the configuration cannot be
served, defer its jobs without spending their attempts. The ownership changes and revokes run
for a target whose vectors are in the row and for one whose vectors are in a side table
(`store => 'side'`), which belongs to the table's owner and must follow it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.support.jobs import JOBS, expire_leases
from tests.support.stores import STORES, WATCH_ARGS, vectors
from worker import exits
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


@dataclass
class Site:
    dsn: str
    conn: Conn  # the superuser's
    owner: str
    heir: str
    writer: str
    worker: str
    target: int
    store: str = "row"  # where the target's vectors are (tests/support/stores.py)

    def connect(self, role: str | None) -> Conn:
        dsn = self.dsn if role is None else make_conninfo(self.dsn, user=role)
        return psycopg.connect(dsn, autocommit=True)

    def write(self, first_id: int, schema: str = "app") -> None:
        """The application's statements: an INSERT of two rows and an UPDATE of one."""
        with self.connect(self.writer) as app:
            app.execute(
                f"INSERT INTO {schema}.docs VALUES (%s, 'row %s'), (%s, 'row %s')",
                (first_id, first_id, first_id + 1, first_id + 1),
            )
            app.execute(f"UPDATE {schema}.docs SET body = body || ' (edited)' WHERE id = 1")

    def count(self, query: str) -> int:
        row = self.conn.execute(query).fetchone()
        assert row is not None
        return int(row[0])

    def assert_all_embedded(self, schema: str = "app", *, deferred: bool = False) -> None:
        """Every row embedded, no dead letter, no job left (`deferred`: but the jobs the worker
        deferred while the target could not be served: due in a minute, then acknowledged)."""
        assert (
            self.conn.execute("SELECT row_key, last_error FROM embeddings.failures").fetchall()
            == []
        )
        rows = vectors(self.conn, self.store, f"{schema}.docs")
        missing = self.conn.execute(
            sql.SQL("SELECT id, body FROM {} WHERE embedding IS NULL ORDER BY id").format(rows)
        ).fetchall()
        assert missing == []
        left = f"SELECT count(*) FROM {JOBS} WHERE NOT %s OR vt <= now()"
        row = self.conn.execute(left.replace("%s", "true" if deferred else "false")).fetchone()
        assert row == (0,)

    def side_table_owner(self) -> str | None:
        """The owner of the side table (None for a target without one)."""
        row = self.conn.execute(
            "SELECT c.relowner::regrole::text FROM embeddings.targets t"
            " JOIN pg_class c ON c.oid = t.store_table AND t.store_kind = 'side' WHERE t.id = %s",
            (self.target,),
        ).fetchone()
        return None if row is None else str(row[0])


@pytest.fixture
def site(conn: Conn, dsn: str, minilm: str, request: pytest.FixtureRequest) -> Iterator[Site]:
    """The site, its target's vectors in the store a test names with
    `@pytest.mark.parametrize("site", STORES, indirect=True)` (else in the row)."""
    store = getattr(request, "param", "row")
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"{kind}_{suffix}" for kind in ("owner", "heir", "writer", "worker")}
    for name in names.values():
        conn.execute(f"CREATE ROLE {name} LOGIN")
    conn.execute(f"GRANT CREATE ON DATABASE {conn.info.dbname} TO {names['owner']}")
    conn.execute(f"GRANT CREATE ON DATABASE {conn.info.dbname} TO {names['heir']}")
    owner_dsn = make_conninfo(dsn, user=names["owner"])
    with psycopg.connect(owner_dsn, autocommit=True) as owner:
        owner.execute("CREATE SCHEMA app")
        owner.execute("CREATE TABLE app.docs (id bigint PRIMARY KEY, body text)")
        owner.execute(
            "CREATE FUNCTION app.doc_text(d app.docs) RETURNS text LANGUAGE sql STABLE"
            " AS $$ SELECT 'doc: ' || d.body $$"
        )
        owner.execute(f"GRANT USAGE ON SCHEMA app TO {names['writer']}, {names['heir']}")
        owner.execute(f"GRANT SELECT, INSERT, UPDATE ON app.docs TO {names['writer']}")
        owner.execute("INSERT INTO app.docs VALUES (1, 'there before watch()')")
    row = conn.execute(
        f"SELECT embeddings.watch('app.docs', 'app.doc_text', model => %s{WATCH_ARGS[store]})",
        (minilm,),
    ).fetchone()
    assert row is not None
    conn.execute("SELECT embeddings.grant_worker(%s)", (names["worker"],))
    yield Site(dsn=dsn, conn=conn, target=int(row[0]), store=store, **names)
    conn.execute("SELECT embeddings.unwatch(t.source) FROM embeddings.targets t")
    conn.execute("DROP SCHEMA IF EXISTS app, app2 CASCADE")
    for name in names.values():
        exists = conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if exists is not None:
            conn.execute(f"DROP OWNED BY {name} CASCADE")
            conn.execute(f"DROP ROLE {name}")


@pytest.fixture
def work(site: Site, run_once: Callable[..., Worker]) -> Callable[..., Worker]:
    """The worker, once, as the least-privilege role."""

    def run(**overrides: Any) -> Worker:
        return run_once(database_url=make_conninfo(site.dsn, user=site.worker), **overrides)

    return run


def test_the_site_works_before_any_administration(site: Site, work: Callable[..., Worker]) -> None:
    site.write(10)
    work()
    site.assert_all_embedded()


@pytest.mark.parametrize("site", STORES, indirect=True)
def test_retiring_the_owner_with_reassign_and_drop_owned(
    site: Site, work: Callable[..., Worker]
) -> None:
    # The standard way to retire a role: its objects go to the heir, its grants go away.
    site.conn.execute(f"REASSIGN OWNED BY {site.owner} TO {site.heir}")
    site.conn.execute(f"DROP OWNED BY {site.owner}")
    site.conn.execute(f"DROP ROLE {site.owner}")
    site.write(10)
    work()
    site.assert_all_embedded()
    if site.store == "side":
        assert site.side_table_owner() == site.heir


def test_reassign_owned_without_drop_owned(site: Site, work: Callable[..., Worker]) -> None:
    site.conn.execute(f"REASSIGN OWNED BY {site.owner} TO {site.heir}")
    site.write(10)
    work()
    site.assert_all_embedded()


def waits_until_given_along(site: Site, work: Callable[..., Worker], the_other: str) -> None:
    """One of the table and its content function has been given to the heir: rows written now
    wait (deferred, no attempt spent) until `the_other` ("ALTER <object>") is given along too;
    then every row is embedded."""
    site.write(10)
    work(max_attempts=1, expect=exits.UNSERVED)
    assert site.count("SELECT count(*) FROM embeddings.failures") == 0
    site.conn.execute(f"{the_other} OWNER TO {site.heir}")
    site.write(20)
    work()
    site.assert_all_embedded(deferred=True)


@pytest.mark.parametrize("site", STORES, indirect=True)
def test_the_table_given_to_another_role(site: Site, work: Callable[..., Worker]) -> None:
    site.conn.execute(f"ALTER TABLE app.docs OWNER TO {site.heir}")
    if (
        site.store == "side"
    ):  # the side table follows the table (the functions writing it run as its owner)
        assert site.side_table_owner() == site.heir
    # The content function is still the old owner's: it may not run as the table's new owner
    # (it would run with more rights than its own), so the target waits, its jobs deferred
    # (no attempt spent), until the function is given along.
    waits_until_given_along(site, work, "ALTER FUNCTION app.doc_text(app.docs)")
    if site.store == "side":
        assert site.side_table_owner() == site.heir


def test_the_content_function_given_to_another_role(
    site: Site, work: Callable[..., Worker]
) -> None:
    site.conn.execute(f"ALTER FUNCTION app.doc_text(app.docs) OWNER TO {site.heir}")
    waits_until_given_along(site, work, "ALTER TABLE app.docs")


@pytest.mark.parametrize("site", STORES, indirect=True)
@pytest.mark.parametrize(
    "revoke",
    [
        "REVOKE USAGE ON SCHEMA embeddings FROM PUBLIC",
        "REVOKE ALL ON SCHEMA embeddings FROM PUBLIC",
        "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA embeddings FROM PUBLIC",
        "REVOKE ALL ON ALL TABLES IN SCHEMA embeddings FROM PUBLIC",
        "REVOKE USAGE ON SCHEMA embeddings_internal FROM PUBLIC",
        "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA embeddings_internal FROM PUBLIC",
        "REVOKE USAGE ON SCHEMA pgmq FROM PUBLIC",
        "REVOKE ALL ON ALL TABLES IN SCHEMA pgmq FROM PUBLIC",
    ],
)
def test_revokes_on_our_schemas_from_public(
    site: Site, work: Callable[..., Worker], revoke: str
) -> None:
    site.conn.execute(revoke)
    site.write(10)
    work()
    site.assert_all_embedded()


def rename_role(site: Site, role: str) -> str:
    """Renames the site's `role` (owner, worker or writer); returns its new name."""
    renamed = f"{getattr(site, role)}_renamed"
    site.conn.execute(f"ALTER ROLE {getattr(site, role)} RENAME TO {renamed}")
    setattr(site, role, renamed)
    return renamed


def test_renaming_the_owner(site: Site, work: Callable[..., Worker]) -> None:
    rename_role(site, "owner")
    site.write(10)
    work()
    site.assert_all_embedded()


def test_renaming_the_worker_role(site: Site, work: Callable[..., Worker], minilm: str) -> None:
    renamed = rename_role(site, "worker")
    # A table watched after the rename is granted to the role under its new name.
    site.conn.execute("CREATE TABLE public.later (id bigint PRIMARY KEY, body text)")
    site.conn.execute("INSERT INTO public.later VALUES (1, 'watched after the rename')")
    site.conn.execute("SELECT embeddings.watch('public.later', 'body', model => %s)", (minilm,))
    listed = site.conn.execute("SELECT embeddings_internal.worker_role_names()").fetchall()
    assert (renamed,) in listed, listed
    site.write(10)
    work()
    site.assert_all_embedded()
    assert site.count("SELECT count(*) FROM public.later WHERE embedding IS NULL") == 0


def test_renaming_the_writer(site: Site, work: Callable[..., Worker]) -> None:
    rename_role(site, "writer")
    site.write(10)
    work()
    site.assert_all_embedded()


def test_renaming_the_schema(site: Site, work: Callable[..., Worker]) -> None:
    site.conn.execute("ALTER SCHEMA app RENAME TO app2")
    site.write(10, schema="app2")
    work(max_attempts=1)
    site.assert_all_embedded(schema="app2")


def test_retiring_the_owner_of_a_chunked_target(
    site: Site, work: Callable[..., Worker], minilm: str
) -> None:
    with site.connect(site.owner) as owner:
        owner.execute("CREATE TABLE app.notes (id bigint PRIMARY KEY, body text)")
        owner.execute(f"GRANT SELECT, INSERT, UPDATE ON app.notes TO {site.writer}")
    site.conn.execute(
        "SELECT embeddings.watch('app.notes', 'body', model => %s, chunk_tokens => 16)", (minilm,)
    )
    site.conn.execute(f"REASSIGN OWNED BY {site.owner} TO {site.heir}")
    site.conn.execute(f"DROP OWNED BY {site.owner}")
    site.conn.execute(f"DROP ROLE {site.owner}")
    with site.connect(site.writer) as app:
        app.execute("INSERT INTO app.notes VALUES (1, 'a note ' || repeat('with words ', 30))")
        app.execute("UPDATE app.notes SET body = body || ' (edited)'")
    site.write(10)
    work()
    site.assert_all_embedded()
    chunk_owner = "SELECT tableowner FROM pg_tables WHERE tablename = 'notes_chunks'"
    assert site.conn.execute(chunk_owner).fetchall() == [(site.heir,)]
    assert site.count("SELECT count(*) FROM app.notes_chunks WHERE chunk LIKE '%(edited)'") == 1


def test_the_table_of_a_chunked_target_given_to_another_role(
    site: Site, work: Callable[..., Worker], minilm: str
) -> None:
    """As a side table: the chunk table goes with the table at once, though the target waits
    for its content function to follow."""
    with site.connect(site.owner) as owner:
        owner.execute("CREATE TABLE app.notes (id bigint PRIMARY KEY, body text)")
        owner.execute(
            "CREATE FUNCTION app.note_text(n app.notes) RETURNS text LANGUAGE sql STABLE"
            " AS $$ SELECT 'note: ' || n.body $$"
        )
        owner.execute(f"GRANT SELECT, INSERT, UPDATE ON app.notes TO {site.writer}")
        owner.execute("INSERT INTO app.notes VALUES (1, 'a note ' || repeat('with words ', 30))")
    site.conn.execute(
        "SELECT embeddings.watch('app.notes', 'app.note_text', model => %s, chunk_tokens => 16)",
        (minilm,),
    )
    chunk_owner = "SELECT tableowner FROM pg_tables WHERE tablename = 'notes_chunks'"
    site.conn.execute(f"ALTER TABLE app.notes OWNER TO {site.heir}")
    assert site.conn.execute(chunk_owner).fetchall() == [(site.heir,)]
    with site.connect(site.writer) as app:
        app.execute("INSERT INTO app.notes VALUES (2, 'another note')")
        app.execute("UPDATE app.notes SET body = body || ' (edited)'")
    work(max_attempts=1, expect=exits.UNSERVED)
    assert site.count("SELECT count(*) FROM embeddings.failures") == 0
    site.conn.execute(f"ALTER FUNCTION app.note_text(app.notes) OWNER TO {site.heir}")
    work()
    assert site.count("SELECT count(DISTINCT id) FROM app.notes_chunks") == 2
    assert site.count("SELECT count(*) FROM app.notes_chunks WHERE chunk LIKE '%(edited)'") == 2


def test_the_schema_given_to_another_role(site: Site, work: Callable[..., Worker]) -> None:
    # The table's owner owned the schema, and loses the use of it: its own table is out of its
    # reach, so the functions that run as it cannot serve the target. A configuration problem:
    # the jobs wait, spending no attempt, until the owner may use the schema again.
    site.conn.execute(f"ALTER SCHEMA app OWNER TO {site.heir}")
    site.write(10)
    work(max_attempts=1, expect=exits.UNSERVED)
    assert site.count("SELECT count(*) FROM embeddings.failures") == 0
    assert site.count(f"SELECT count(*) FROM {JOBS}") > 0
    site.conn.execute(f"GRANT USAGE ON SCHEMA app TO {site.owner}")
    expire_leases(site.conn)  # the deferral's minute, waited out
    work(max_attempts=1)
    site.assert_all_embedded()
