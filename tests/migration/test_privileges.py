"""What an upgrade keeps of the rights an operator gave or took on our objects
(worker/schema/privileges.py): a monitoring role set up as each release's docs said keeps reading
the status, and the documented revocations from PUBLIC stay revoked, through a real upgrade from
each release (its own `migrate` made the schema) and through a reinstall over today's schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import release
from tests.support.login_roles import login_role
from worker import schema
from worker.schema import privileges

Conn = psycopg.Connection[Any]

# docs/security.md, "Revoking from PUBLIC" (0.3.0's security.md said the same of `embeddings`).
HARDENING = [
    f"REVOKE USAGE ON SCHEMA {ns} FROM PUBLIC; "
    f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {ns} FROM PUBLIC; "
    f"REVOKE ALL ON ALL TABLES IN SCHEMA {ns} FROM PUBLIC"
    for ns in ("embeddings", "embeddings_internal")
]


def public_reach(conn: Conn) -> tuple[bool, int, int]:
    """What PUBLIC reaches of ours: USAGE on either schema, functions it may execute, tables
    and views it may read (of any kind, in either schema)."""
    row = conn.execute(
        """SELECT bool_or(has_schema_privilege('public', n.oid, 'USAGE')),
                  (SELECT count(*) FROM pg_proc p WHERE p.pronamespace IN
                   (to_regnamespace('embeddings'), to_regnamespace('embeddings_internal'))
                   AND has_function_privilege('public', p.oid, 'EXECUTE')),
                  (SELECT count(*) FROM pg_class c WHERE c.relnamespace IN
                   (to_regnamespace('embeddings'), to_regnamespace('embeddings_internal'))
                   AND c.relkind IN ('r', 'v', 'p') AND has_table_privilege('public', c.oid, 'SELECT'))
           FROM pg_namespace n WHERE n.nspname IN ('embeddings', 'embeddings_internal')"""
    ).fetchone()
    assert row is not None
    return bool(row[0]), int(row[1]), int(row[2])


@pytest.fixture
def admin(empty_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize("version", sorted(release.RELEASES))
def test_an_upgrade_keeps_a_monitoring_role_and_the_revocations_from_public(
    empty_dsn: str,
    admin: Conn,
    version: str,
    unpack_release: Callable[[str], release.Release],
) -> None:
    """At the release: a monitoring role granted as its docs said (usage.md: SELECT on
    embeddings.status, EXECUTE on embeddings.target_status(boolean)) and, by mistake,
    inbox_pending(text); PUBLIC revoked as security.md said. Today's migrate used to leave the
    role with `permission denied for function target_status` and give PUBLIC back USAGE on the
    schema, EXECUTE on 55 of its functions and SELECT on 7 of its tables. It carries the monitoring grant to the internal function the
    forwarder calls, says the other gives nothing now, keeps PUBLIC out, and says so."""
    old = unpack_release(version)
    migrated = old.run("migrate", dsn=empty_dsn)
    assert migrated.returncode == 0, migrated.stderr
    admin.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    admin.execute("INSERT INTO docs VALUES (1, 'one')")
    admin.execute("SELECT embeddings.watch('docs', 'body')")
    with (
        login_role(admin, empty_dsn, "monitor") as monitor_dsn,
        login_role(admin, empty_dsn, "nobody") as nobody_dsn,
    ):
        monitor = psycopg.conninfo.conninfo_to_dict(monitor_dsn)["user"]
        admin.execute(
            f"GRANT USAGE ON SCHEMA embeddings TO {monitor}; "
            f"GRANT SELECT ON embeddings.status TO {monitor}; "
            f"GRANT EXECUTE ON FUNCTION embeddings.target_status(boolean) TO {monitor}; "
            f"GRANT EXECUTE ON FUNCTION embeddings.inbox_pending(text) TO {monitor}"
        )
        admin.execute(HARDENING[0])
        assert public_reach(admin) == (False, 0, 0)

        upgrade = schema.migrate(empty_dsn)

        assert upgrade.applied[-1] == schema.head_revision()
        said = "\n".join(upgrade.lines())
        assert "kept PUBLIC's revocations" in said and "USAGE on schema embeddings;" in said
        assert (
            f"carried {monitor}'s EXECUTE on embeddings.target_status(boolean) to "
            "embeddings_internal.target_status(boolean)" in said
        ), said
        assert f"warning: {monitor}'s EXECUTE on embeddings.inbox_pending(text)" in said
        # What existed at the release stays revoked; what is new since gets the release's
        # grants, out of PUBLIC's reach behind the schemas' USAGE.
        assert public_reach(admin)[0] is False
        with psycopg.connect(monitor_dsn) as conn:
            assert conn.execute("SELECT target FROM embeddings.status").fetchall() == [
                ("public.docs.embedding",)
            ]
        for statement in ("SELECT * FROM embeddings.targets", "SELECT embeddings.default_model()"):
            with (
                psycopg.connect(nobody_dsn) as conn,
                pytest.raises(psycopg.errors.InsufficientPrivilege),
            ):
                conn.execute(statement)

        reach = public_reach(admin)
        again = schema.migrate(empty_dsn)  # a plain re-run: nothing to do, nothing undone
        assert again.applied == [] and again.kept == []
        assert public_reach(admin) == reach


def test_a_reinstall_over_today_s_schema_keeps_the_revocations_from_public(
    dsn: str, conn: Conn
) -> None:
    """The next release's upgrade reinstalls the code over today's schema, as this does: the
    revocations of docs/security.md stay, the grants of a monitoring role too, and an
    un-hardened schema is reinstalled with nothing kept."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    with psycopg.connect(dsn) as other:
        assert schema.reinstall_code(other, schema.files.install_files()) == []
        other.commit()
    open_reach = public_reach(conn)
    assert open_reach[0] and open_reach[1] > 0 and open_reach[2] > 0
    with login_role(conn, dsn, "monitor") as monitor_dsn:
        monitor = psycopg.conninfo.conninfo_to_dict(monitor_dsn)["user"]
        conn.execute(
            f"GRANT USAGE ON SCHEMA embeddings, embeddings_internal TO {monitor}; "
            f"GRANT SELECT ON embeddings.status TO {monitor}; "
            f"GRANT EXECUTE ON FUNCTION embeddings_internal.target_status(boolean) TO {monitor}"
        )
        for statement in HARDENING:
            conn.execute(statement)
        assert public_reach(conn) == (False, 0, 0)

        with psycopg.connect(dsn) as other:
            kept = schema.reinstall_code(other, schema.files.install_files())
            other.commit()

        assert len(kept) == 1 and kept[0].startswith("kept PUBLIC's revocations"), kept
        assert public_reach(conn) == (False, 0, 0)
        with psycopg.connect(monitor_dsn) as monitoring:
            assert monitoring.execute("SELECT count(*) FROM embeddings.status").fetchone() == (1,)


def test_what_an_upgrade_carries_is_what_docs_sql_md_lets_a_role_be_given() -> None:
    """A grant is carried to an internal function only where the SQL reference says a role
    other than the owner and the worker roles needs it (docs/security.md's design)."""
    reference = (Path(__file__).parents[2] / "docs" / "sql.md").read_text()
    for internal in privileges.CARRIED:
        assert f"`EXECUTE` on `{internal}`" in reference, internal


def test_a_reinstall_over_a_hardened_schema_keeps_a_search_role_searching(
    dsn: str, conn: Conn
) -> None:
    """Where PUBLIC's rights were revoked, a role given grant_search() keeps searching after the
    next release's reinstall: its grant on search() is made again, and the target's search
    functions (made again too, by sql/99_regenerate.sql) follow search()'s grants, not
    PUBLIC's."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'cats sleep'), (2, 'dogs bark')")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    conn.execute("SELECT embeddings.enable_fts('docs')")
    conn.execute("UPDATE docs SET embedding = array_fill(0.1::real, ARRAY[384])::halfvec")
    hybrid = """SELECT count(*) FROM embeddings.hybrid_search('docs', 'cats',
                    (SELECT embedding FROM docs WHERE id = 1), 2)"""
    search_functions = """SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE')),
                                 bool_and(has_function_privilege(%s, p.oid, 'EXECUTE'))
                          FROM pg_proc p WHERE p.proname ~ '^embeddings_[0-9]+_(search|text_ranking|bm25_ranking)$'"""
    with login_role(conn, dsn, "app_search") as search_dsn:
        role = psycopg.conninfo.conninfo_to_dict(search_dsn)["user"]
        for statement in HARDENING:
            conn.execute(statement)
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON docs TO {role}")
        conn.execute("SELECT embeddings.grant_search(%s)", (role,))
        with psycopg.connect(search_dsn, autocommit=True) as searcher:
            assert searcher.execute(hybrid).fetchone() == (2,)

        with psycopg.connect(dsn) as other:
            schema.reinstall_code(other, schema.files.install_files())
            other.commit()

        assert conn.execute(search_functions, (role,)).fetchone() == (False, True)
        with psycopg.connect(search_dsn, autocommit=True) as searcher:
            assert searcher.execute(hybrid).fetchone() == (2,)
