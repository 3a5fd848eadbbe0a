"""worker/queries.sql holds only queries the worker runs: each name is spelled in the package."""

from __future__ import annotations

from pathlib import Path

from worker import queries

PACKAGE = Path(queries.__file__).parent


def test_every_named_query_is_used_by_the_package() -> None:
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "queries.py")
    unused = [n for n in queries.names() if f'"{n}"' not in source and f"'{n}'" not in source]
    assert unused == [], "named queries nothing runs: remove them from queries.sql"


# What a statement of ours must not name to say it runs no one else's code: a target's
# owner-run functions (filled in as identifiers), a user table's, or the SQL functions of ours
# that call them.
OTHERS_CODE = (
    "{load}",
    "{store}",
    "{blank}",
    "{forget}",
    "{reusable}",
    "{chunks}",
    "{table}",
    "{column}",
    "embeddings_",
    "embeddings.sweep",
    "embeddings.verify",
    "embeddings_internal.lock_target",
    "embeddings.search",
    "embeddings.hybrid_search",
    "embeddings.status",
)


def _spelled(text: str) -> str:
    """`embeddings_internal.<name>` as `internal:<name>`, and the schema's name as a literal
    (catalog reads) as `'internal'`: `embeddings_` is a target's functions."""
    return text.replace("embeddings_internal.", "internal:").replace(
        "'embeddings_internal'", "'internal'"
    )


def test_statements_that_say_they_run_no_one_elses_code_name_none() -> None:
    claims = [n for n in queries.names() if queries.ours(n)]
    assert "read_jobs" in claims and "delete_jobs" in claims
    wrong = {n: [o for o in OTHERS_CODE if _spelled(o) in _spelled(queries.get(n))] for n in claims}
    assert {n: found for n, found in wrong.items() if found} == {}


def test_the_session_guard_recognises_our_statements_whatever_their_form() -> None:
    from psycopg import sql

    from worker.session_guard import _ours

    assert _ours(queries.get("takes_no_writes"))
    assert _ours(
        queries.compose("read_jobs", queue_table=sql.Identifier("q"), read_stamp=sql.SQL(""))
    )
    assert not _ours(queries.get("status_rows"))
    assert not _ours("SELECT 1")  # not one of ours: distrusted
    assert not _ours(sql.SQL("SELECT {x}").format(x=sql.Identifier("t")))
