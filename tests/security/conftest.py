"""Roles for the security tier: a hostile table owner, another tenant whose rows it wants, an
application writer, the least-privilege worker, a login without grants and a monitoring login
(a member of pg_monitor only), created per test (roles are cluster-wide: unique names, dropped
afterwards). The pipeline fixtures are the integration tier's (the worker runs in-process)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.integration.conftest import (
    embedders,
    generated_model_path,
    minilm,
    model_path,
    run_once,
    running,
    settings,
    tiny_model_paths,
    tiny_models,
)
from tests.support.models import MINILM

__all__ = [
    "embedders",
    "generated_model_path",
    "minilm",
    "model_path",
    "run_once",
    "running",
    "settings",
    "tiny_model_paths",
    "tiny_models",
]

Conn = psycopg.Connection[Any]

# What the hostile owner's code does wherever it runs: says as whom it ran, tries to become a
# superuser, and tries to copy the other tenant's rows into its own table. `loot` is the owner's
# table; anyone may insert into it, so that the code leaves a trace whoever runs it.
# What the owner's code tries wherever it runs, as whoever runs it: to make the owner a
# superuser, and to read the secrets only the table's readers may read. BECAME_SUPERUSER: the
# SQL text it records when the first worked.
_ESCALATIONS = """
    BEGIN
        EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', '{owner}');
        INSERT INTO public.loot VALUES (current_user, BECAME_SUPERUSER);
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        INSERT INTO public.loot SELECT current_user, 'secret: ' || s.secret FROM public.secrets s;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
"""


def escalations(became_superuser: str) -> str:
    """The owner's code's attempts (a PL/pgSQL fragment; `{owner}` left for str.format)."""
    return _ESCALATIONS.replace("BECAME_SUPERUSER", became_superuser)


PAYLOAD = (
    """
CREATE TABLE public.loot (ran_as name NOT NULL, what text NOT NULL);
GRANT INSERT ON public.loot TO PUBLIC;
CREATE FUNCTION public.payload() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.loot VALUES (current_user, 'ran');"""
    + escalations("'became superuser'")
    + """    RETURN '';
END $$;
"""
)


@dataclass(frozen=True)
class Roles:
    dsn: str  # the superuser's (the migrator's)
    owner: str  # owns `docs` and its content function: the hostile one
    tenant: str  # owns `secrets`, also watched
    writer: str  # the application: INSERT, UPDATE, SELECT on docs
    worker: str  # embeddings.grant_worker()
    stranger: str  # a login without grants
    monitor: str  # a login that is a member of pg_monitor only (a monitoring agent's)

    def dsn_of(self, role: str | None = None) -> str:
        return self.dsn if role is None else make_conninfo(self.dsn, user=role)

    def connect(self, role: str | None = None) -> Conn:
        return psycopg.connect(self.dsn_of(role), autocommit=True)

    @property
    def names(self) -> tuple[str, ...]:
        """Every role's name."""
        return (self.owner, self.tenant, self.writer, self.worker, self.stranger, self.monitor)

    @property
    def worker_dsn(self) -> str:
        return make_conninfo(self.dsn, user=self.worker)


def create_roles(conn: Conn, dsn: str) -> Roles:
    """The roles, under names no other test takes, with `secrets` watched and the owner's
    payload in the database of `dsn` (`conn`: the superuser's connection to it)."""
    suffix = uuid.uuid4().hex[:8]
    kinds = ("owner", "tenant", "writer", "worker", "stranger", "monitor")
    names = {kind: f"{kind}_{suffix}" for kind in kinds}
    for name in names.values():
        conn.execute(f"CREATE ROLE {name} LOGIN")
    for kind in ("owner", "tenant"):
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {names[kind]}")
    conn.execute("SELECT embeddings.grant_worker(%s)", (names["worker"],))
    conn.execute(f"GRANT pg_monitor TO {names['monitor']}")
    found = Roles(dsn=dsn, **names)
    with found.connect(found.tenant) as tenant:
        tenant.execute("CREATE TABLE secrets (id int PRIMARY KEY, secret text)")
        tenant.execute("INSERT INTO secrets VALUES (1, 'the other tenant''s secret')")
    conn.execute("SELECT embeddings.watch('secrets', 'secret', model => %s)", (MINILM,))
    with found.connect(found.owner) as owner:
        owner.execute(PAYLOAD.format(owner=found.owner).encode())
    return found


def drop_roles(conn: Conn, roles: Roles) -> None:
    """The roles gone, with what they own in `conn`'s database (the only one left that holds
    anything of theirs)."""
    for name in roles.names:
        conn.execute(f"ALTER ROLE {name} NOSUPERUSER")
        conn.execute(f"DROP OWNED BY {name} CASCADE")
        conn.execute(f"DROP ROLE {name}")


@pytest.fixture
def roles(conn: Conn, dsn: str) -> Iterator[Roles]:
    found = create_roles(conn, dsn)
    yield found
    drop_roles(conn, found)


def contained(roles: Roles, *also: str) -> list[tuple[str, str]]:
    """Asserts that the owner's code ran as the owner only (or as roles in `also`: a writer of
    the owner's table runs the owner's own triggers and domain checks, as in any table of
    Postgres) and gained nothing; returns what it recorded (the places where it ran)."""
    with roles.connect() as conn:
        traces = [
            (str(r), str(w)) for r, w in conn.execute("SELECT ran_as, what FROM loot").fetchall()
        ]
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (roles.owner,)
        ).fetchone()
    assert superuser == (False,), f"the owner became a superuser: {traces}"
    assert {ran_as for ran_as, _ in traces} <= {roles.owner, *also}, traces
    assert not [w for _, w in traces if w.startswith("secret")], traces
    return traces


@dataclass(frozen=True)
class Compiled:
    """What pg_stat_statements counted in the test's database (nested statements too, ours
    inside functions included): `reset()` starts the count again."""

    conn: Conn

    def reset(self) -> None:
        self.conn.execute("SELECT pg_stat_statements_reset()")

    def by(self, role: str | None = None) -> tuple[int, int]:
        """The statements that ran as `role` (None: as anyone, our SECURITY DEFINER functions'
        owner included) since the last reset: their calls, and the functions JIT-compiled for
        them."""
        row = self.conn.execute(
            "SELECT coalesce(sum(s.calls), 0), coalesce(sum(s.jit_functions), 0)"
            " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
            " JOIN pg_database d ON d.oid = s.dbid"
            " WHERE r.rolname = coalesce(%s, r.rolname) AND d.datname = current_database()",
            (role,),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


@pytest.fixture
def compiled(conn: Conn) -> Compiled:
    """JIT compilation counted, statement by statement, in the test's database (sessions made
    from now on); skipped where the server cannot JIT or does not preload pg_stat_statements (a
    test cluster of scripts/pgcluster.sh does both, with Debian's LLVM-built Postgres)."""
    if conn.execute("SELECT pg_jit_available()").fetchone() != (True,):
        pytest.skip("this server has no JIT (no LLVM): a plan cannot keep a decision to compile")
    preloaded = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    if "pg_stat_statements" not in str(preloaded):
        pytest.skip("pg_stat_statements is not preloaded here: nothing counts what is compiled")
    conn.execute("CREATE EXTENSION pg_stat_statements")
    conn.execute(f"ALTER DATABASE {conn.info.dbname} SET pg_stat_statements.track = 'all'")
    return Compiled(conn)
