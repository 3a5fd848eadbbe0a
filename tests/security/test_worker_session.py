"""The worker's own session trusts nothing a tenant's code left in it (issue 36 §2).

A table owner's code runs in the worker's session whenever the worker writes (its triggers) or
reads (its content function): through the owner-run functions, with the owner's rights. What it
can still leave behind is session state: settings made with `set_config(..., false)` outlive the
SECURITY DEFINER function and the commit, and deferred triggers fire at COMMIT, after the
function returned. Neither may make the worker run the owner's code as the worker, nor stop the
worker serving the other tenants."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.conftest import Running
from tests.security.conftest import Compiled, Conn, Roles, contained
from tests.support.fetch import wait_for_row
from tests.support.models import MINILM
from worker.process.runner import Worker

# In a schema the owner may CREATE in: functions the worker's own SQL names unqualified, in
# pg_catalog. A search path that puts `evil` first makes them win.
EVIL = """
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.payload(); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.payload(); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION evil.make_interval(secs double precision) RETURNS interval LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.payload(); RETURN pg_catalog.make_interval(secs => secs); END $$;
CREATE FUNCTION evil.greatest_(a timestamptz) RETURNS timestamptz LANGUAGE sql AS $$ SELECT a $$;
"""

# Settings a hook leaves in the session, each from inside the owner's code.
SETTINGS = {
    "search_path": "SELECT set_config('search_path', 'evil, pg_catalog, public', false)",
    "statement_timeout": "SELECT set_config('statement_timeout', '1', false)",
    "read_only": "SELECT set_config('default_transaction_read_only', 'on', false)",
    "isolation": "SELECT set_config('default_transaction_isolation', 'serializable', false)",
    "datestyle": "SELECT set_config('DateStyle', 'SQL, DMY', false)",
    "intervalstyle": "SELECT set_config('IntervalStyle', 'sql_standard', false)",
    "timezone": "SELECT set_config('TimeZone', 'Pacific/Kiritimati', false)",
    "bytea_output": "SELECT set_config('bytea_output', 'escape', false)",
    "extra_float_digits": "SELECT set_config('extra_float_digits', '-15', false)",
    "lock_timeout": "SELECT set_config('lock_timeout', '1', false)",
    "transform_null_equals": "SELECT set_config('transform_null_equals', 'on', false)",
}


def _owner_docs(roles: Roles, hook: str, *, deferred: bool = False, store: str = "row") -> None:
    """The owner's `docs`, watched by the superuser, with a trigger that runs `hook` (and the
    payload) whenever the worker writes a vector: on `docs`, or on its side table (the owner's
    too) for store 'side'."""
    with roles.connect() as su:  # a tenant with a schema of its own, as on a shared database
        su.execute(f"GRANT CREATE ON DATABASE {su.info.dbname} TO {roles.owner}")
    with roles.connect(roles.owner) as owner:
        owner.execute(EVIL)
        owner.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        owner.execute("INSERT INTO docs SELECT g, 'text ' || g FROM generate_series(1, 3) g")
        owner.execute(
            "CREATE FUNCTION hook() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN PERFORM public.payload(); PERFORM {hook.removeprefix('SELECT ')};"
            " RETURN NULL; END $$"
        )
    with roles.connect() as su:
        su.execute(
            "SELECT embeddings.watch('docs', 'body', model => %s, store => %s)", (MINILM, store)
        )
    hooked = "UPDATE ON docs" if store == "row" else "INSERT OR UPDATE ON docs_embeddings"
    with roles.connect(roles.owner) as owner:
        if deferred:
            owner.execute(
                f"CREATE CONSTRAINT TRIGGER hook AFTER {hooked} DEFERRABLE INITIALLY DEFERRED"
                " FOR EACH ROW EXECUTE FUNCTION hook()"
            )
        else:
            owner.execute(
                f"CREATE TRIGGER hook AFTER {hooked} FOR EACH ROW EXECUTE FUNCTION hook()"
            )
        owner.execute("TRUNCATE loot")


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_settings_a_trigger_leaves_in_the_worker_session_change_nothing(
    roles: Roles, run_once: Callable[..., Worker], setting: str
) -> None:
    """The owner's trigger, fired by the worker's vector write, leaves `setting` in the worker's
    session. The worker's next statements (of the same transaction and of the next ones) run as
    before: nothing of the owner's runs as the worker, and the other tenant's rows, queued
    after the owner's, are embedded too."""
    _owner_docs(roles, SETTINGS[setting])
    with roles.connect(roles.tenant) as tenant:  # queued after the owner's rows
        tenant.execute("INSERT INTO secrets SELECT g, 'more ' || g FROM generate_series(2, 4) g")
    run_once(database_url=roles.worker_dsn, batch_size=1)
    contained(roles)
    with roles.connect() as su:
        assert su.execute("SELECT count(embedding) FROM docs").fetchone() == (3,)
        assert su.execute("SELECT count(embedding) FROM secrets").fetchone() == (4,)
        assert su.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


@pytest.mark.parametrize("store", ["row", "side"])
def test_the_guard_puts_back_every_setting_the_owners_code_left(roles: Roles, store: str) -> None:
    """A caller that does not reset its session (a superuser's own session, sweep() inside
    one) calls a target's guarded write directly; the owner's trigger, fired by it, leaves every
    setting above in the session. The guard (guard_save(), guard_restore(): sql/32_access.sql)
    puts each back: the session's settings after the call are those before it."""
    hooks = ", ".join(hook.removeprefix("SELECT ") for hook in SETTINGS.values())
    _owner_docs(roles, f"SELECT {hooks}", store=store)
    names = ["search_path", "statement_timeout", "lock_timeout", "default_transaction_read_only",
             "default_transaction_isolation", "DateStyle", "IntervalStyle", "TimeZone",
             "bytea_output", "extra_float_digits", "transform_null_equals"]  # fmt: skip
    read = "SELECT " + ", ".join(f"pg_catalog.current_setting('{n}')" for n in names)
    with roles.connect() as su:
        (target,) = su.execute(
            "SELECT id FROM embeddings.targets WHERE source = 'docs'::regclass"
        ).fetchone() or (None,)
        keys = ["1", "2", "3"]
        digests = [d for (d,) in su.execute("SELECT md5(body) FROM docs ORDER BY id").fetchall()]
        vector = "[" + ",".join(["0.5"] * 384) + "]"
        before = su.execute(read).fetchone()
        with su.transaction():
            written = su.execute(
                f"SELECT * FROM embeddings.embeddings_{target}_store(%s, %s,"
                " ARRAY[%s, %s, %s]::halfvec[], %s)",
                (keys, keys, vector, vector, vector, digests),
            ).fetchall()
            assert sorted(written) == [("1",), ("2",), ("3",)]
            assert su.execute(read).fetchone() == before
        assert su.execute(read).fetchone() == before
    assert contained(roles)  # the hook ran, as the owner


def test_a_deferred_trigger_of_the_owner_fires_as_the_owner(
    roles: Roles, run_once: Callable[..., Worker]
) -> None:
    """A deferred constraint trigger fires at COMMIT; Postgres 15 fires it as whoever is the
    current user then (the worker, not the owner whose function queued it)."""
    _owner_docs(roles, "SELECT 1", deferred=True)
    run_once(database_url=roles.worker_dsn)
    assert contained(roles)  # it fired, as the owner
    with roles.connect() as su:
        assert su.execute("SELECT count(embedding) FROM docs").fetchone() == (3,)


def test_plans_made_under_the_owners_jit_settings_serve_no_other_tenants_rows(
    conn: Conn, roles: Roles, running: Callable[..., Running], compiled: Compiled
) -> None:
    """The owner's trigger turns JIT on for every plan (`jit_above_cost = 0`) in the worker's
    new session, whose first rows are the owner's: a plan of the worker's own statements made
    then, and cached for the session, would keep the decision to compile (LLVM, milliseconds a
    statement) for every later run. The other tenant's rows, embedded in the same session
    afterwards, compile nothing: neither the worker's statements nor those of the functions it
    calls (run as their owners)."""
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")  # (the tenant's first row)
    # (and the trigger's next statement is compiled: the settings took in the worker's session)
    jit = "set_config('jit', 'on', false), set_config('jit_above_cost', '0', false)"
    _owner_docs(roles, f"SELECT {jit}; PERFORM count(*) FROM pg_catalog.pg_class")
    worker = running(database_url=roles.worker_dsn, batch_size=1)
    embedded = "SELECT count(embedding) FROM {} WHERE id BETWEEN {} AND {}"
    wait_for_row(conn, embedded.format("docs", 1, 3), (3,), 60, "the owner's rows embedded")
    assert compiled.by(roles.owner)[1] > 0, "the owner's settings did not take: nothing shown"
    compiled.reset()
    with roles.connect(roles.tenant) as tenant:
        tenant.execute("INSERT INTO secrets SELECT g, 'more ' || g FROM generate_series(2, 9) g")
    wait_for_row(conn, embedded.format("secrets", 2, 9), (8,), 60, "the tenant's rows embedded")
    worker.stop()
    assert compiled.by(roles.worker)[0] > 0  # the worker's statements were counted ...
    assert compiled.by()[1] == 0  # ... and nobody's was compiled meanwhile


# What the owner's hook runs: the rest of the worker's transaction read-only (SET LOCAL), which no
# one can turn back in that transaction; only its rollback, or the end of a function with a SET
# clause that it ran in, does.
READ_ONLY = "SELECT set_config('transaction_read_only', 'on', true)"


@pytest.mark.parametrize("store", ["row", "side"])
def test_a_hook_that_makes_the_worker_s_transaction_read_only_stops_no_other_rows(
    roles: Roles, running: Callable[..., Running], store: str
) -> None:
    """The owner's trigger (on its table; on its side table, which it owns) makes the rest of
    the worker's write transaction read-only. The other tenant's rows, in the same batches, are
    embedded all the same: the owner's code runs inside functions with a SET clause, at whose
    end Postgres undoes a SET LOCAL made in them. In the row store the owner's rows fail (the
    target's own trigger on that UPDATE writes the queue's inbox, in the same statement);
    written into a side table, they are embedded."""
    _owner_docs(roles, READ_ONLY, store=store)
    with roles.connect(roles.tenant) as tenant:  # queued after the owner's rows
        tenant.execute("INSERT INTO secrets SELECT g, 'more ' || g FROM generate_series(2, 4) g")
    running(database_url=roles.worker_dsn)
    with roles.connect() as su:
        wait_for_row(
            su, "SELECT count(embedding) FROM secrets", (4,), 20, "the tenant's rows embedded"
        )
        if store == "row":
            failed = "SELECT count(*) FROM embeddings.failures"
            wait_for_row(su, failed, (3,), 20, "the owner's rows failed")
        else:
            embedded = "SELECT count(*) FROM docs_embeddings"
            wait_for_row(su, embedded, (3,), 20, "the owner's rows embedded")
    contained(roles)
