"""Hostile waits: what a tenant, or a login without grants, can hold up while another tenant
writes (issue 46; docs/reliability.md, "Bounded waits").

One real `embed-worker` process (as the least-privilege worker role, default bounds) serves a
database in which the other tenant's `secrets` is watched. For each kind of table the hostile
tenant owns (KINDS) and each wait it can make (WAITS): its table is watched, the wait begins,
rows go into its table and then into the other tenant's; the other tenant's rows are embedded
within OTHERS_SECONDS while the wait goes on; the wait ends, and the hostile tenant's rows are
embedded too (a lock wait spends no attempt; a sleep fails a row an attempt at a time, well
under EMBED_MAX_ATTEMPTS).

A new wait, or a new kind of table, is one entry in WAITS or KINDS.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support import stores
from tests.support.cluster import Cluster
from tests.support.models import MINILM, require_minilm
from tests.support.process import WorkerProcess, wait_for

Conn = psycopg.Connection[Any]

OTHERS_SECONDS = 5  # the other tenant's rows, while the hostile tenant holds on
RELEASED_SECONDS = 60  # the hostile tenant's rows, once it let go
ROWS = 3  # rows the hostile tenant writes per case


@dataclass(frozen=True)
class World:
    dsn: str  # the superuser's
    owner: str  # the hostile tenant: owns its tables, their code, their side and chunk tables
    tenant: str  # owns `secrets`, watched
    worker: str  # embeddings.grant_worker()
    stranger: str  # a login without grants

    def connect(self, role: str | None = None, *, autocommit: bool = True) -> Conn:
        dsn = self.dsn if role is None else make_conninfo(self.dsn, user=role)
        return psycopg.connect(dsn, autocommit=autocommit)


@dataclass(frozen=True)
class Case:
    world: World
    kind: str
    table: str  # the hostile tenant's table of this case
    store: str  # where its vectors are: "row", "side" or "chunks" (tests/support/stores.py)

    @property
    def store_table(self) -> str:
        return {"row": self.table, "side": f"{self.table}_embeddings"}.get(
            self.store, f"{self.table}_chunks"
        )

    def sql(self, statement: str) -> str:
        return statement.replace("{table}", self.table).replace("{store}", self.store_table)

    def owner_runs(self, *statements: str) -> None:
        with self.world.connect(self.world.owner) as owner:
            for statement in statements:
                owner.execute(self.sql(statement).encode())

    def insert(self, conn: Conn) -> None:
        """The hostile tenant's rows (queued by its triggers when `conn` commits)."""
        conn.execute(
            self.sql(
                f"INSERT INTO {{table}} SELECT g, 'row ' || g || ' of {self.kind}'"
                f" FROM generate_series(1, {ROWS}) g"
            ).encode()
        )


# --- the hostile tenant's tables ---------------------------------------------------------------
# How the owner's code sleeps, in the worker's session only (session_user is not the owner
# there: the worker's load and write run the owner's code as the owner): while `sleepers` holds
# 1, for a minute; while it holds 2, for ever, catching the cancel of its statement's timeout.
SLEEP = (
    "IF session_user <> current_user AND EXISTS (SELECT FROM public.sleepers WHERE id = 1) THEN"
    " PERFORM pg_sleep(60); END IF;"
    " IF session_user <> current_user AND EXISTS (SELECT FROM public.sleepers WHERE id = 2) THEN"
    " LOOP BEGIN PERFORM pg_sleep(60); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP;"
    " END IF;"
)
# Each kind: its store, what the owner creates before the superuser watches it, and watch()'s
# content argument and options. The content function sleeps as SLEEP says.
KINDS: dict[str, tuple[str, str, str]] = {
    "row": ("row", "CREATE TABLE {table} (id integer PRIMARY KEY, body text)", "'body'"),
    "side": (
        "side",
        "CREATE TABLE {table} (id integer PRIMARY KEY, body text)",
        "'body', store => 'side'",
    ),
    "chunked": (
        "chunks",
        "CREATE TABLE {table} (id integer PRIMARY KEY, body text)",
        "'body', chunk_tokens => 16",
    ),
    "content function": (
        "row",
        "CREATE TABLE {table} (id integer PRIMARY KEY, body text);"
        " CREATE FUNCTION {table}_text(d {table}) RETURNS text LANGUAGE plpgsql STABLE AS $$"
        f" BEGIN {SLEEP} RETURN d.body; END $$",
        "'{table}_text'",
    ),
}


# --- the waits ---------------------------------------------------------------------------------
# A wait writes the hostile tenant's rows (Case.insert) and holds something up while it lasts.
Wait = Callable[[Case], contextlib.AbstractContextManager[None]]

SYNC = 0x68_6F_73_74  # an advisory lock of the test's own: the owner's two sessions, in step


@contextlib.contextmanager
def _taken_at_commit(case: Case, *statements: str) -> Iterator[None]:
    """The owner takes `statements` (locks) in a session of its own at the moment its rows
    commit, before any worker can reach them, and holds them while the wait lasts: the
    statements wait in a DO block behind its inserting transaction (a lock of the test's own),
    and run, each with a fresh snapshot, as it commits."""
    holder = case.world.connect(case.world.owner, autocommit=False)
    taken = threading.Event()
    failed: list[BaseException] = []
    body = " ".join(f"{case.sql(s)};" for s in statements)

    def take() -> None:
        try:
            holder.execute(f"DO $$ BEGIN PERFORM pg_advisory_xact_lock({SYNC}); {body} END $$")
            taken.set()
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)
            taken.set()

    with case.world.connect(case.world.owner, autocommit=False) as writer:
        writer.execute(f"SELECT pg_advisory_xact_lock({SYNC})")
        case.insert(writer)
        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        wait_for(
            lambda: (
                writer.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND pid = %s",
                    (holder.info.backend_pid,),
                ).fetchone()
                == (1,)
            ),
            timeout=10,
            what="the holder to wait behind the rows' transaction",
        )
        writer.commit()
    assert taken.wait(10) and not failed, failed
    try:
        yield
    finally:
        holder.rollback()
        holder.close()
        thread.join(10)


def _holding(*statements: str) -> Wait:
    return lambda case: _taken_at_commit(case, *statements)


@contextlib.contextmanager
def _advisory_locks(case: Case) -> Iterator[None]:
    """Every advisory lock a login without grants can name: of every target (their ids are
    readable), the keys written, as hashtext() of their text and as integers."""
    with case.world.connect(case.world.stranger) as stranger:
        stranger.execute(
            "SELECT pg_advisory_lock(t.id, hashtext(k::text)), pg_advisory_lock(t.id, k),"
            " pg_advisory_lock((t.id::bigint << 32) | k::bigint)"
            " FROM embeddings.targets t, generate_series(1, %s::int) k",
            (ROWS,),
        )
        with case.world.connect(case.world.owner) as owner:
            case.insert(owner)
        yield


@contextlib.contextmanager
def _sleeping(case: Case, how: int) -> Iterator[None]:
    """The owner's code sleeps (SLEEP: `how`) while the wait lasts: its content function (on
    the worker's load), and public.sleepy() (its trigger on the table the worker writes)."""
    case.owner_runs(f"INSERT INTO public.sleepers VALUES ({how})")
    try:
        with case.world.connect(case.world.owner) as owner:
            case.insert(owner)  # (its own statements never sleep)
        yield
    finally:
        case.owner_runs("DELETE FROM public.sleepers")


def _sleeps(how: int, *, trigger: bool) -> Wait:
    def wait(case: Case) -> contextlib.AbstractContextManager[None]:
        if trigger:  # on the table the worker writes: the table itself, its side or chunk table
            case.owner_runs(
                "CREATE TRIGGER sleepy AFTER INSERT OR UPDATE ON {store}"
                " FOR EACH ROW EXECUTE FUNCTION public.sleepy()"
            )
        return _sleeping(case, how)

    return wait


ALL = tuple(KINDS)
STORED_APART = ("side", "chunked")  # the kinds whose vectors are in a table of their own

# Each wait: the kinds of table it applies to, and the wait itself.
WAITS: dict[str, tuple[tuple[str, ...], Wait]] = {
    "a login without grants holds every advisory lock it can name": (ALL, _advisory_locks),
    "the tenant holds a row of its table": (
        ALL,
        _holding("PERFORM FROM {table} WHERE id = 1 FOR UPDATE"),
    ),
    "the tenant holds its table in SHARE mode": (ALL, _holding("LOCK TABLE {table} IN SHARE MODE")),
    "the tenant holds its table in ACCESS EXCLUSIVE mode": (
        ALL,
        _holding("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"),
    ),
    "the tenant holds its side or chunk table in ACCESS EXCLUSIVE mode": (
        STORED_APART,
        _holding("LOCK TABLE {store} IN ACCESS EXCLUSIVE MODE"),
    ),
    "the tenant's trigger on what the worker writes sleeps": (ALL, _sleeps(1, trigger=True)),
    "the tenant's content function sleeps": (("content function",), _sleeps(1, trigger=False)),
    "the tenant's trigger sleeps and catches the cancel": (ALL, _sleeps(2, trigger=True)),
    "the tenant's content function sleeps and catches the cancel": (
        ("content function",),
        _sleeps(2, trigger=False),
    ),
}

CASES = [(wait, kind) for wait, (kinds, _) in WAITS.items() for kind in kinds]


# --- the world ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(cluster: Cluster, template_db: str) -> Iterator[World]:
    """A database of its own for the module, its roles, and the other tenant's `secrets`."""
    name = cluster.create_database(template=template_db)
    suffix = uuid.uuid4().hex[:8]
    found = World(
        cluster.dsn(name), *(f"{kind}_{suffix}" for kind in ("owner", "tenant", "worker", "x"))
    )
    with found.connect() as su:
        for role in (found.owner, found.tenant, found.worker, found.stranger):
            su.execute(f"CREATE ROLE {role} LOGIN")
        for role in (found.owner, found.tenant):
            su.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
        su.execute("SELECT embeddings.grant_worker(%s)", (found.worker,))
    with found.connect(found.tenant) as tenant:
        tenant.execute("CREATE TABLE secrets (id integer PRIMARY KEY, secret text)")
    with found.connect(found.owner) as owner:
        owner.execute("CREATE TABLE public.sleepers (id integer PRIMARY KEY)")
        owner.execute(
            "CREATE FUNCTION public.sleepy() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {SLEEP} RETURN NULL; END $$"
        )
    with found.connect() as su:
        su.execute("SELECT embeddings.watch('secrets', 'secret', model => %s)", (MINILM,))
    yield found
    with found.connect() as su:
        for role in (found.owner, found.tenant, found.worker, found.stranger):
            su.execute(f"DROP OWNED BY {role} CASCADE")
    cluster.drop_database(name)
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        for role in (found.owner, found.tenant, found.worker, found.stranger):
            admin.execute(f"DROP ROLE {role}")


@pytest.fixture(scope="module")
def worker(world: World, model_path: str) -> Iterator[WorkerProcess]:
    """The real worker, as the worker role, with the default bounds."""
    require_minilm()
    process = WorkerProcess(
        make_conninfo(world.dsn, user=world.worker),
        {
            "EMBED_MODEL": MINILM,
            "EMBED_MODEL_PATH": model_path,
            "EMBED_THREADS": "1",
            "EMBED_MAX_ATTEMPTS": "20",  # a sleeping row fails an attempt per round
        },
        http=True,
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def embedded(world: World, store: str, table: str, keys: range) -> bool:
    with world.connect() as su:
        su.execute("SET lock_timeout = '100ms'")  # (a table the wait holds reads as not yet)
        try:
            done = stores.embedded(su, store, table)
        except psycopg.errors.LockNotAvailable:
            return False
    return all(done.get(k) for k in keys)


@pytest.mark.parametrize(("wait", "kind"), CASES, ids=[f"{w}: {k}" for w, k in CASES])
def test_a_hostile_wait_holds_up_only_the_tenants_own_rows(
    world: World, worker: WorkerProcess, wait: str, kind: str
) -> None:
    number = CASES.index((wait, kind))
    store, create, content = KINDS[kind]
    case = Case(world, kind, f"hostile_{number}", store)
    case.owner_runs(create)
    with world.connect() as su:
        su.execute(
            f"SELECT embeddings.watch('{case.table}', {case.sql(content)}, model => %s)", (MINILM,)
        )
    others = range(1000 * (number + 1), 1000 * (number + 1) + ROWS)
    with WAITS[wait][1](case):
        with world.connect(world.tenant) as tenant:
            tenant.execute(
                "INSERT INTO secrets SELECT g, 'the other tenant''s row ' || g"
                " FROM generate_series(%s::int, %s::int) g",
                (others.start, others.stop - 1),
            )
        started = time.monotonic()
        try:
            wait_for(
                lambda: embedded(world, "row", "secrets", others),
                timeout=OTHERS_SECONDS,
                interval=0.1,
                what=f"the other tenant's rows while {wait} ({kind})",
            )
        except TimeoutError as exc:  # what the worker did meanwhile
            raise TimeoutError(f"{exc}\n{worker.log_text()[-6000:]}") from None
        assert time.monotonic() - started <= OTHERS_SECONDS
        assert worker.get("/healthz")[0] == 200
    wait_for(
        lambda: embedded(world, store, case.table, range(1, ROWS + 1)),
        timeout=RELEASED_SECONDS,
        interval=0.2,
        what=f"the hostile tenant's rows once the wait ended ({wait}, {kind})",
    )
    with world.connect() as su:
        dead = su.execute(
            "SELECT count(*) FROM embeddings.failures f JOIN embeddings.targets t"
            " ON t.id = f.target_id WHERE t.source = %s::regclass",
            (case.table,),
        ).fetchone()
    assert dead == (0,)
