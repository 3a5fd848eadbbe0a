"""The forwarders kept for workers of 0.3.0 (sql/95_compat_0_3_0.sql): every function of ours
that 0.3.0's worker calls (its worker/queries.sql, read from the release's source), and every
function those call in their 0.3.0 bodies (its sql/: a 0.3.0 statement that waited on migrate's
locks runs the rest of its body after migrate, naming them), is callable in schema `embeddings`
by the name 0.3.0 used, by whom 0.3.0 let call it, and gives what the internal function of that
name gives. The rolling upgrade itself runs in
tests/acceptance/test_rolling_upgrade.py."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support import release

Conn = psycopg.Connection[Any]

CALLED = re.compile(r"\bembeddings\.([a-z_][a-z0-9_]*)\s*\(")


def called_by(root: Path) -> set[str]:
    """The functions of schema embeddings that a release's worker/queries.sql calls (its
    comments left out)."""
    text = (root / "worker" / "queries.sql").read_text()
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    return set(CALLED.findall(code))


def bodies(root: Path) -> dict[str, str]:
    """The release's functions of schema embeddings (sql/, its code files), each name with the
    text of its definitions (their comments left out)."""
    found: dict[str, str] = {}
    for path in sorted((root / "sql").glob("[0-9][0-9]_*.sql")):
        for part in re.split(
            r"^(?=CREATE (?:OR REPLACE )?FUNCTION )", path.read_text(), flags=re.M
        ):
            named = re.match(r"CREATE (?:OR REPLACE )?FUNCTION embeddings\.(\w+)", part)
            if named:
                code = "\n".join(line.split("--", 1)[0] for line in part.splitlines())
                found[named.group(1)] = found.get(named.group(1), "") + code
    return found


def in_embeddings(conn: Conn, names: set[str]) -> list[str]:
    """Those of `names` that are no function (nor table) of schema embeddings."""
    return [
        name
        for name in sorted(names)
        if conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'embeddings'::regnamespace"
            " AND proname = %s",
            (name,),
        ).fetchone()
        == (0,)
        # (`INSERT INTO embeddings.failures (...)` is a table's)
        and conn.execute("SELECT to_regclass('embeddings.' || %s)", (name,)).fetchone() == (None,)
    ]


@pytest.fixture(scope="module")
def release_0_3_0(unpack_release: Callable[[str], release.Release]) -> release.Release:
    return unpack_release("0.3.0")


def test_every_function_0_3_0_s_worker_calls_is_in_embeddings(
    conn: Conn, release_0_3_0: release.Release
) -> None:
    called = called_by(release_0_3_0.root)
    assert {"lock_target", "move_inbox", "target_status", "relation_named"} <= called
    missing = in_embeddings(conn, called)
    assert missing == []


def test_every_function_their_0_3_0_bodies_call_is_in_embeddings(
    conn: Conn, release_0_3_0: release.Release
) -> None:
    defined = bodies(release_0_3_0.root)
    called = called_by(release_0_3_0.root) & set(defined)
    inner = {name for f in called for name in CALLED.findall(defined[f]) if name in defined}
    assert {"lock_target_version", "message_keys", "exact_counts"} <= inner
    assert in_embeddings(conn, inner) == []


def test_the_forwarders_answer_as_the_internals_and_with_0_3_0_s_grants(conn: Conn) -> None:
    role = f"compat_{uuid.uuid4().hex[:8]}"
    stranger = f"stranger_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute(f"CREATE ROLE {stranger} LOGIN")
    conn.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'hello')")
    conn.execute("SELECT embeddings.watch('docs', 'body', backfill => false)")
    conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
    conn.commit()
    try:
        dsn = conn.info.dsn
        with psycopg.connect(make_conninfo(dsn, user=role), autocommit=True) as worker:
            for old, new in (
                ("embeddings.schema_revision()", "embeddings_internal.schema_revision()"),
                (
                    "embeddings.target_status(true)",
                    "embeddings_internal.target_status(true)",
                ),
                ("embeddings.stopped_targets()", "embeddings_internal.stopped_targets()"),
                ("embeddings.relation_named('docs')", "embeddings_internal.relation_named('docs')"),
                (
                    "embeddings.inbox_pending('embedding_jobs')",
                    "embeddings_internal.inbox_pending('embedding_jobs')",
                ),
            ):
                columns = "target, total_rows" if "target_status" in old else "*"
                assert (
                    worker.execute(f"SELECT {columns} FROM {old}").fetchall()
                    == worker.execute(f"SELECT {columns} FROM {new}").fetchall()
                ), old
            assert worker.execute(
                "SELECT embeddings.lock_target(t.id) FROM embeddings.targets t"
            ).fetchone() == (1,)
            assert worker.execute(
                "SELECT embeddings.target_name(t) FROM embeddings.targets t"
            ).fetchone() == ("public.docs.embedding",)
        with psycopg.connect(make_conninfo(dsn, user=stranger), autocommit=True) as other:
            # PUBLIC's in 0.3.0, PUBLIC's still; the worker roles' are theirs alone.
            assert other.execute("SELECT embeddings.relation_named('docs')").fetchone() == ("docs",)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                other.execute("SELECT embeddings.lock_target(1)")
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP OWNED BY {stranger}")
        conn.execute(f"DROP ROLE {role}")
        conn.execute(f"DROP ROLE {stranger}")
        conn.commit()
