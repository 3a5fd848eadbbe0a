"""`embed-worker status TABLE`: beside many watched tables, one table's rows alone, named as
`search` and `failures` name a table; a name that is no watched table is refused, saying so."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.hardening import HARDENING

Conn = psycopg.Connection[Any]


def test_status_of_one_table_shows_its_targets_alone(
    conn: Conn, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.cli import main as cli

    for table in ("docs", "notes"):
        stores.texts_table(conn, {}, table=table)
        conn.execute(f"SELECT embeddings.watch('{table}', 'body')")
    conn.execute("CREATE SCHEMA other")
    conn.execute("CREATE TABLE other.notes (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('other.notes', 'body')")
    conn.execute("CREATE TABLE plain (id int)")

    def status(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["status", *argv, "--database-url", dsn])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = status("--json")
    assert code == 0 and len(json.loads(out)) == 3
    code, out, _ = status("notes", "--json")
    assert code == 0 and [r["target"] for r in json.loads(out)] == ["public.notes.embedding"]
    code, out, _ = status("other.notes")
    assert code == 0 and "other.notes.embedding" in out and "public." not in out, out

    code, out, err = status("nosuch")
    assert code == 2 and "no table nosuch" in err and out == ""
    code, out, err = status("plain")
    assert code == 2 and "plain is not watched: SELECT embeddings.watch(" in err and out == ""
    code, _, err = status("My Notes.x")  # no name at all: Postgres's reason, not a traceback
    assert code == 2 and "no table My Notes.x" in err, err


def test_an_exact_status_of_one_table_counts_that_table_alone(conn: Conn) -> None:
    """`status TABLE` filtered the view's rows: `status docs --exact` counted every watched
    table exactly, scanning each (beside a thousand large tables, minutes), to show one. The
    view counts the targets named alone now (embeddings.counted_targets, for the transaction)."""
    from worker import status

    targets = {}
    for table in ("docs", "notes"):
        stores.texts_table(conn, {1: "one", 2: "two"}, table=table)
        row = conn.execute(f"SELECT embeddings.watch('{table}', 'body')").fetchone()
        assert row is not None
        targets[table] = row[0]
    scans = (
        "SELECT relname::text, seq_scan + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables"
        " WHERE relname IN ('docs', 'notes')"
    )
    with conn.transaction():  # (this transaction's scans: pg_stat_xact_user_tables)
        before = dict(conn.execute(scans).fetchall())
        rows = status.fetch(conn, exact=True, targets=[targets["docs"]])
        after = dict(conn.execute(scans).fetchall())
        assert conn.execute("SELECT count(*) FROM embeddings.status_exact").fetchone() == (2,)
    assert [(r["target"], r["total_rows"]) for r in rows] == [("public.docs.embedding", 2)]
    assert after["docs"] > before["docs"] and after["notes"] == before["notes"], (before, after)


def test_a_count_a_lock_stops_names_who_holds_the_lock(conn: Conn, dsn: str) -> None:
    """`status --exact` beside a session that holds its table locked: `?` with the session that
    holds the lock, as migrate names them (it printed `?` and a note telling to ANALYZE the
    table or run `status --exact`, the command just run)."""
    from worker import db, status
    from worker.cli.status import UNKNOWN_NOTE, render

    stores.texts_table(conn, {1: "one", 2: "two"})
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    with psycopg.connect(dsn, application_name="nightly-rebuild") as locker:
        locker.execute("LOCK TABLE docs IN ACCESS EXCLUSIVE MODE")
        pid = locker.info.backend_pid
        with db.connect(dsn, lock_timeout_ms=100) as reader:
            (row,) = status.fetch(reader, exact=True)
    assert row["total_rows"] is None
    skipped = row["counts_skipped"]
    assert f"pid {pid} (nightly-rebuild, " in skipped and "holds ACCESS EXCLUSIVE on" in skipped
    lines = render([row])
    said = next(line for line in lines if "counts skipped" in line)
    assert said.startswith("public.docs.embedding: ? counts skipped, not waited for: its table")
    assert f"pid {pid} (nightly-rebuild" in said
    assert UNKNOWN_NOTE not in lines

    with db.connect(dsn) as reader:  # released: counted, nothing skipped
        (row,) = status.fetch(reader, exact=True)
    assert (row["total_rows"], row["counts_skipped"]) == (2, None)


# docs/sql.md, embeddings.status: what a monitoring role is granted to read the status.
MONITORING = (
    "GRANT USAGE ON SCHEMA embeddings TO {role}; "
    "GRANT SELECT ON embeddings.status TO {role}; "
    "GRANT EXECUTE ON FUNCTION embeddings_internal.target_status(boolean) TO {role}"
)
# ... and, where PUBLIC's rights were revoked, what `status TABLE` uses of what PUBLIC may
# (docs/sql.md, embeddings.status).
ONE_TABLE = (
    "GRANT USAGE ON SCHEMA embeddings_internal TO {role}; "
    "GRANT EXECUTE ON FUNCTION embeddings_internal.relation_named(text),"
    " embeddings_internal.named_in_path(text, boolean, text),"
    " embeddings_internal.session_start_path() TO {role}; "
    "GRANT SELECT ON embeddings.targets TO {role}"
)


@pytest.mark.parametrize("hardened", [False, True], ids=["as installed", "PUBLIC revoked"])
def test_a_monitoring_role_granted_as_documented_reads_one_table_s_status(
    conn: Conn, dsn: str, hardened: bool
) -> None:
    """docs/sql.md's grants for a monitoring role (a pg_monitor login: USAGE on the schema,
    SELECT on embeddings.status, EXECUTE on target_status) let it run `status`, and `status
    TABLE` too, on a schema as installed. Where PUBLIC's rights were revoked, `status` stopped
    at the release check (`permission denied for schema embeddings_internal`: to_regprocedure()
    of the revision function), and `status TABLE` needs what it uses of PUBLIC's by name, as
    docs/sql.md says."""
    from tests.support.login_roles import login_role
    from tests.support.process import run_cli

    for table in ("docs", "notes"):
        stores.texts_table(conn, {1: "one"}, table=table)
        conn.execute(f"SELECT embeddings.watch('{table}', 'body')")
    if hardened:
        for statement in HARDENING:
            conn.execute(statement)
    with login_role(conn, dsn, "monitor", "pg_monitor") as monitor_dsn:
        role = psycopg.conninfo.conninfo_to_dict(monitor_dsn)["user"]
        conn.execute(MONITORING.format(role=role))
        env = {"DATABASE_URL": monitor_dsn}

        every = run_cli("status", "--json", env=env)
        assert every.returncode == 0, every.stderr
        assert len(json.loads(every.stdout)) == 2
        if hardened:
            refused = run_cli("status", "notes", env=env)
            assert refused.returncode == 1, refused.stderr
            assert "permission denied for schema embeddings_internal" in refused.stderr
            conn.execute(ONE_TABLE.format(role=role))
        one = run_cli("status", "notes", "--json", env=env)
        assert one.returncode == 0, one.stderr
        assert [r["target"] for r in json.loads(one.stdout)] == ["public.notes.embedding"]
        plain = run_cli("status", "nosuch", env=env)
        assert plain.returncode == 2 and "no table nosuch" in plain.stderr, plain.stderr


def test_counts_a_dropped_content_column_leaves_unknown_say_so_and_the_fix(conn: Conn) -> None:
    """QA 5a nit 9: the content column dropped, status showed `?` counts explained by the note
    for a content function's blank rows and an unanalyzed table ("ANALYZE it"), which neither
    applied nor helped. Its note says the rows cannot be counted for the target's problem, and
    what mends it."""
    from worker import status
    from worker.cli.status import UNKNOWN_NOTE, render

    stores.texts_table(conn, {1: "one", 2: "two"})
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    conn.execute("ALTER TABLE docs DROP COLUMN body")

    for exact in (False, True):
        lines = render(status.fetch(conn, exact=exact))
        assert UNKNOWN_NOTE not in lines, lines
        said = [line for line in lines if line.startswith("? not known for public.docs.embedding")]
        assert len(said) == 1, lines
        assert "its content column body was dropped" in said[0], said
        assert "watch() the table again" in said[0], said
