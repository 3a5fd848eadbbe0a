"""Chunk and side tables obey the watched table's row-level security (sql/56_side.sql): two
tenants share a table under a policy, each granted SELECT on the table and on its store (as
search() and hybrid_search() need, docs/security.md#search), and each reads only its own rows,
directly and through search, for a chunked and for a side-table target. The vectors are the
worker's, written through the owner's functions with the store's row-level security on."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.security.conftest import Roles
from tests.support.models import MINILM

Conn = psycopg.Connection[Any]

# Each tenant's notes: ids 1-4 the first tenant's, 5-8 the second's; every note shares the
# words "launch plan", so a search that ignored the policy would rank the other tenant's too.
NOTES = [
    (i, f"the launch plan, part {i}: " + " ".join(["section"] * (40 + i))) for i in range(1, 9)
]

WATCH = {
    "chunks": "chunk_tokens => 16, fts => 'english'",
    "side": "store => 'side', fts => 'english'",
}
STORE = {"chunks": "notes_chunks", "side": "notes_embeddings"}


@pytest.fixture
def tenants(roles: Roles) -> Iterator[tuple[str, str]]:
    """Two logins that share the owner's `notes` under its row-level security."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"alice_{suffix}", f"bob_{suffix}")
    with roles.connect() as su:
        for name in names:
            su.execute(f"CREATE ROLE {name} LOGIN")
    yield names
    with roles.connect() as su:
        for name in names:
            su.execute(f"DROP OWNED BY {name} CASCADE")
            su.execute(f"DROP ROLE {name}")


def shared_notes(roles: Roles, tenants: tuple[str, str], store: str) -> None:
    """The owner's `notes`: each row its tenant's (a policy on current_user), SELECT granted to
    both tenants on the table and, once the target made it, on its store; watched by the
    superuser and embedded by the worker."""
    with roles.connect(roles.owner) as owner:
        owner.execute("CREATE TABLE notes (id int PRIMARY KEY, tenant name NOT NULL, body text)")
        for i, body in NOTES:
            owner.execute("INSERT INTO notes VALUES (%s, %s, %s)", (i, tenants[(i - 1) // 4], body))
        owner.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
        owner.execute("CREATE POLICY own_notes ON notes USING (tenant = current_user)")
        owner.execute(f"GRANT SELECT ON notes TO {tenants[0]}, {tenants[1]}")
    with roles.connect() as su:
        su.execute(
            f"SELECT embeddings.watch('notes', 'body', model => %s, {WATCH[store]})", (MINILM,)
        )
    with roles.connect(roles.owner) as owner:
        owner.execute(f"GRANT SELECT ON {STORE[store]} TO {tenants[0]}, {tenants[1]}")


def own_ids(tenant_index: int) -> set[int]:
    return set(range(1, 5)) if tenant_index == 0 else set(range(5, 9))


def seen(roles: Roles, role: str, store: str) -> dict[str, set[int]]:
    """What `role` reads of `notes`' store directly, and finds through each search."""
    with roles.connect(role) as conn:
        direct = {int(r[0]) for r in conn.execute(f"SELECT id FROM {STORE[store]}").fetchall()}
        # Every column of the store, the tsvector included: a row either shows whole or not.
        rows = conn.execute(f"SELECT count(*) FROM {STORE[store]} x WHERE x::text <> ''").fetchone()
        query = f"(SELECT embedding FROM {STORE[store]} ORDER BY id LIMIT 1)"
        searched = conn.execute(
            f"SELECT key FROM embeddings.search('notes', {query}, 20)"
        ).fetchall()
        hybrid = conn.execute(
            f"SELECT key FROM embeddings.hybrid_search('notes', 'launch plan', {query}, 20)"
        ).fetchall()
    assert rows is not None
    return {
        "direct": direct,
        "rows": {int(rows[0])},
        "search": {int(r[0]) for r in searched},
        "hybrid_search": {int(r[0]) for r in hybrid},
    }


@pytest.mark.parametrize("store", ["chunks", "side"])
def test_each_tenant_reads_only_its_rows_of_the_store(
    roles: Roles, tenants: tuple[str, str], run_once: Callable[..., Any], store: str
) -> None:
    shared_notes(roles, tenants, store)
    run_once(database_url=roles.worker_dsn)  # the least-privilege worker writes the store
    with roles.connect() as su:
        stored = su.execute(f"SELECT count(DISTINCT id), count(*) FROM {STORE[store]}").fetchone()
    assert stored is not None and stored[0] == 8, "the worker wrote every row's vectors"
    for index, tenant in enumerate(tenants):
        found = seen(roles, tenant, store)
        own = own_ids(index)
        assert found["direct"] == own, f"{tenant} read {found['direct']} of {STORE[store]}"
        assert found["search"] == own and found["hybrid_search"] == own, found
        with roles.connect(roles.owner) as owner:  # its owner (no FORCE): every row
            own_rows = owner.execute(
                f"SELECT count(*) FROM {STORE[store]} WHERE id = ANY (%s)", (sorted(own),)
            ).fetchone()
        assert found["rows"] == {own_rows[0] if own_rows else -1}
    # A role granted the store but not the table reads nothing of it: its rights are the table's.
    with roles.connect(roles.owner) as owner:
        owner.execute(f"GRANT SELECT ON {STORE[store]} TO {roles.stranger}")
    with (
        roles.connect(roles.stranger) as stranger,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        stranger.execute(f"SELECT id FROM {STORE[store]}").fetchall()


@pytest.mark.parametrize("store", ["chunks", "side"])
def test_the_store_follows_key_renames_and_retypes(
    roles: Roles, tenants: tuple[str, str], run_once: Callable[..., Any], store: str
) -> None:
    """The policy names the table's key through a function regenerated with the target's other
    functions: a renamed key column, or one of a wider type, keeps each tenant to its rows."""
    shared_notes(roles, tenants, store)
    run_once(database_url=roles.worker_dsn)
    with roles.connect(roles.owner) as owner:
        owner.execute("ALTER TABLE notes RENAME COLUMN id TO note_id")
        owner.execute("ALTER TABLE notes ALTER COLUMN note_id TYPE bigint")
    for index, tenant in enumerate(tenants):
        with roles.connect(tenant) as conn:
            direct = {
                int(r[0]) for r in conn.execute(f"SELECT note_id FROM {STORE[store]}").fetchall()
            }
        assert direct == own_ids(index)


@pytest.mark.parametrize("store", ["chunks", "side"])
def test_dropping_the_table_still_works_and_its_store_shows_its_owner_only(
    roles: Roles, tenants: tuple[str, str], run_once: Callable[..., Any], store: str
) -> None:
    """The policy depends on no table Postgres tracks: DROP TABLE of the watched table goes
    through (the event trigger forgets the target, sql/45_dropped.sql). The store stays, its
    vectors with it, under row-level security without the policy: no tenant reads it."""
    shared_notes(roles, tenants, store)
    run_once(database_url=roles.worker_dsn)
    with roles.connect(roles.owner) as owner:
        owner.execute("DROP TABLE notes")
        kept = owner.execute(f"SELECT count(DISTINCT id) FROM {STORE[store]}").fetchone()
    assert kept == (8,)
    with roles.connect() as su:
        assert su.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (1,)  # secrets
    for tenant in tenants:
        with roles.connect(tenant) as conn:
            assert conn.execute(f"SELECT count(*) FROM {STORE[store]}").fetchone() == (0,)
