"""A table owner without superuser tries every path by which embed-worker could run its code with
more rights than its own (issue 24 §1). Its code (tests/security/conftest.py PAYLOAD) records
as whom it ran, tries ALTER ROLE ... SUPERUSER, and tries to copy the other tenant's watched
rows into its own table. Each path must leave it with nothing: its code runs as the owner, or
not at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.security.conftest import Roles, contained
from tests.support.jobs import clear_queue, queued_keys
from tests.support.models import MINILM
from tests.support.stores import STORES
from worker import exits
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

BENIGN = "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE AS $$ SELECT d.body $$"
# Still STABLE, still the owner's: watch()'s checks of the function cannot tell.
TURNED = (
    "CREATE OR REPLACE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE"
    " AS $$ SELECT d.body || public.payload() $$"
)


def owner_docs(
    roles: Roles,
    *,
    rows: int = 3,
    partitioned: bool = False,
    turned: bool = False,
    store: str = "row",
) -> int:
    """The owner's `docs`, watched by the superuser with the owner's content function, its
    vectors in `store` (tests/support/stores.py)."""
    with roles.connect(roles.owner) as owner:
        if partitioned:
            owner.execute(
                "CREATE TABLE docs (id int, body text, PRIMARY KEY (id)) PARTITION BY RANGE (id)"
            )
            owner.execute("CREATE TABLE docs_1 PARTITION OF docs FOR VALUES FROM (0) TO (100000)")
        else:
            owner.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        owner.execute(
            "INSERT INTO docs SELECT g, 'text ' || g FROM generate_series(1, %s) g", (rows,)
        )
        owner.execute(BENIGN)
        owner.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON docs TO {roles.writer}")
        if turned:
            owner.execute(TURNED)
    with roles.connect() as su:
        row = su.execute(
            "SELECT embeddings.watch('docs', 'doc_text', model => %s, store => %s)",
            (MINILM, store),
        )
        found = row.fetchone()
    assert found is not None
    return int(found[0])


def turn(roles: Roles) -> None:
    with roles.connect(roles.owner) as owner:
        owner.execute(TURNED)


def forget_jobs(roles: Roles) -> None:
    """As if the jobs were lost (a TRUNCATE of the queue): what sweep() is for."""
    with roles.connect() as su:
        clear_queue(su)
        su.execute("DELETE FROM embeddings.backfills")


def test_attaching_a_partition_evaluates_no_content_function(roles: Roles) -> None:
    target = owner_docs(roles, partitioned=True)
    turn(roles)
    with roles.connect(roles.owner) as owner:
        owner.execute("CREATE TABLE docs_2 (LIKE docs)")
        owner.execute("INSERT INTO docs_2 (id, body) VALUES (150000, 'attached')")
        owner.execute(
            "ALTER TABLE docs ATTACH PARTITION docs_2 FOR VALUES FROM (100000) TO (200000)"
        )
    assert contained(roles) == []  # the event trigger queues keys only
    with roles.connect() as su:
        assert 150000 in queued_keys(su, target)


def test_sweep_by_a_superuser_runs_the_content_function_as_its_owner(roles: Roles) -> None:
    target = owner_docs(roles)
    turn(roles)
    forget_jobs(roles)
    with roles.connect() as su:
        su.execute("SELECT embeddings.sweep()")
        assert sorted(queued_keys(su, target)) == [1, 2, 3]
    assert contained(roles)  # it ran, as the owner


def test_a_verifying_sweep_by_a_superuser_runs_the_content_function_as_its_owner(
    roles: Roles,
) -> None:
    """sweep(verify => true) evaluates every row's content (to compare it with the vector's
    fingerprint): only through the owner's function, as the owner."""
    target = owner_docs(roles)
    forget_jobs(roles)
    with roles.connect() as su:
        su.execute("UPDATE docs SET embedding = NULL")  # (no vectors: all three need a job)
        clear_queue(su)
    turn(roles)
    with roles.connect() as su:
        su.execute("SELECT embeddings.verify(1000)")
        assert sorted(queued_keys(su, target)) == [1, 2, 3]
    traces = contained(roles)
    assert traces  # it ran, as the owner
    # a login without grants cannot run it
    with (
        roles.connect(roles.stranger) as stranger,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        stranger.execute("SELECT embeddings.sweep(verify => true)")


def test_backfill_steps_evaluate_no_content_function(roles: Roles) -> None:
    """watch()'s inline step (as the superuser calling it), the worker's steps and sweep()'s.
    The content function is the owner's turned one from the start: wherever it were evaluated,
    as whoever, it would leave a trace in `loot` (PAYLOAD's first statement, outside its
    exception blocks), so none must be left."""
    target = owner_docs(roles, rows=2500, turned=True)
    with roles.connect() as su:
        clear_queue(su)  # a step waits while the lane holds one: as if the worker had done it
    with roles.connect(roles.worker) as worker:
        row = worker.execute(
            "SELECT * FROM embeddings_internal.backfill_next('embedding_jobs')"
        ).fetchone()
        assert row == (1000, 1000)
    with roles.connect() as su:
        clear_queue(su)
        su.execute("SELECT embeddings.sweep()")
        assert su.execute("SELECT count(*) FROM embeddings.backfills").fetchone() == (0,)
        assert sorted(queued_keys(su, target)) == list(range(2001, 2501))
    assert contained(roles) == []  # not evaluated at all, as anyone


def test_model_change_completion_runs_the_content_function_as_its_owner(roles: Roles) -> None:
    owner_docs(roles)
    with roles.connect() as su:
        su.execute("SELECT embeddings.rewatch('docs', model => 'bge-small-en-v1.5')")
    turn(roles)
    forget_jobs(roles)  # the change's own jobs: lost, so that completion looks for the rows
    for who in (roles.worker, None):
        with roles.connect(who) as caller:
            results = caller.execute(
                "SELECT result FROM embeddings_internal.complete_changes()"
            ).fetchall()
        assert results and "lacked the new vector" in results[0][0], results
        forget_jobs(roles)
    contained(roles)


def test_reading_the_status_evaluates_no_content_function(roles: Roles) -> None:
    """status and status_exact, read by a superuser: the turned function, evaluated as anyone,
    would leave a trace in `loot`."""
    target = owner_docs(roles)
    turn(roles)
    with roles.connect() as su:
        for view in ("status", "status_exact"):
            row = su.execute(
                f"SELECT total_rows, cleared_rows FROM embeddings.{view} WHERE target_id = %s",
                (target,),
            ).fetchone()
            assert row == (3, None)  # cleared rows need the content: not counted
    assert contained(roles) == []  # not evaluated at all, as anyone


def test_the_worker_loads_content_as_the_owner(
    roles: Roles, run_once: Callable[..., Worker]
) -> None:
    owner_docs(roles)
    turn(roles)
    run_once(database_url=roles.worker_dsn)
    assert {"ran"} == {what for _, what in contained(roles)}
    with roles.connect() as su:
        assert su.execute("SELECT count(embedding) FROM docs").fetchone() == (3,)


def test_the_owners_triggers_fire_as_the_owner_when_the_worker_writes(
    roles: Roles, run_once: Callable[..., Worker]
) -> None:
    owner_docs(roles)
    with roles.connect(roles.owner) as owner:
        owner.execute(
            "CREATE FUNCTION spy() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM public.payload(); RETURN NULL; END $$"
        )
        owner.execute("CREATE TRIGGER spy AFTER UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION spy()")
    run_once(database_url=roles.worker_dsn)
    assert contained(roles)  # it fired, as the owner
    with roles.connect() as su:
        assert su.execute("SELECT count(embedding) FROM docs").fetchone() == (3,)


# Key types the owner controls: what Postgres runs of them when keys are compared, rendered as
# JSON or cast, must never run in our privileged code.
MOOD = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')"
KEY_TYPES = {
    "equality operator": [
        MOOD,
        "CREATE FUNCTION mood_eq(a mood, b mood) RETURNS boolean LANGUAGE plpgsql IMMUTABLE"
        " AS $$ BEGIN PERFORM public.payload(); RETURN a::text = b::text; END $$",
        "CREATE OPERATOR public.= (LEFTARG = mood, RIGHTARG = mood, FUNCTION = mood_eq)",
        "CREATE TABLE keyed (k mood PRIMARY KEY, body text)",
    ],
    "cast to json": [
        MOOD,
        "CREATE FUNCTION mood_json(m mood) RETURNS json LANGUAGE plpgsql IMMUTABLE"
        " AS $$ BEGIN PERFORM public.payload(); RETURN to_json(m::text); END $$",
        "CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood)",
        "CREATE TABLE keyed (k mood PRIMARY KEY, body text)",
    ],
    "domain check": [
        "CREATE FUNCTION mood_ok(v text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE"
        " AS $$ BEGIN PERFORM public.payload(); RETURN true; END $$",
        "CREATE DOMAIN mood AS text CHECK (public.mood_ok(VALUE))",
        "CREATE TABLE keyed (k mood PRIMARY KEY, body text)",
    ],
}


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_key_types_of_the_owner_run_nothing_in_privileged_code(
    roles: Roles, kind: str, run_once: Callable[..., Worker]
) -> None:
    with roles.connect(roles.owner) as owner:
        for statement in KEY_TYPES[kind]:
            owner.execute(statement)
        owner.execute("INSERT INTO keyed VALUES ('sad', 'first'), ('ok', 'second')")
        owner.execute(f"GRANT SELECT, INSERT, UPDATE ON keyed TO {roles.writer}")
        owner.execute("TRUNCATE loot")  # its own inserts ran the code as itself
    with roles.connect() as su:
        su.execute("SELECT embeddings.watch('keyed', 'body', model => %s)", (MINILM,))
    with roles.connect(roles.writer) as writer:  # the trigger functions
        writer.execute("INSERT INTO keyed VALUES ('happy', 'third')")
        writer.execute("UPDATE keyed SET body = body || ' (edited)'")
    with roles.connect() as su:  # sweep() in slices: its cursor is a key
        clear_queue(su)
        su.execute("DELETE FROM embeddings.backfills")
        for _ in range(4):
            su.execute("SELECT embeddings.sweep(max_rows => 1)")
        su.execute("SELECT * FROM embeddings.status")
    run_once(database_url=roles.worker_dsn)
    # (The writer's INSERT checks its key against the owner's domain as the writer: Postgres.)
    contained(roles, *([roles.writer] if kind == "domain check" else []))
    with roles.connect() as su:
        assert su.execute("SELECT count(embedding) FROM keyed").fetchone() == (3,)


@pytest.mark.parametrize("store", STORES)
def test_the_owner_cannot_call_the_generated_functions_into_running_as_someone_else(
    roles: Roles, run_once: Callable[..., Worker], store: str
) -> None:
    """Without the event trigger that regenerates them (an install by a non-superuser), the
    owner may ALTER the functions generated for its table, which it owns: made SECURITY
    INVOKER they would run as their caller. They check whom they run as and refuse; the
    target is deferred with the reason, its rows neither lost nor dead-lettered. A side
    table's follow-up of deletes and truncations (the TRUNCATE trigger, ours, calls the owner's
    `_prune`) refuses alike, and never fails the application's statement."""
    target = owner_docs(roles, store=store)
    with roles.connect() as su:
        su.execute("ALTER EVENT TRIGGER embeddings_follow_schema_changes DISABLE")
    try:
        with roles.connect(roles.owner) as owner:
            functions = [
                str(f)
                for (f,) in owner.execute(
                    "SELECT p.oid::regprocedure FROM pg_proc p"
                    " WHERE p.pronamespace = 'embeddings'::regnamespace"
                    " AND p.proowner = current_user::regrole"
                ).fetchall()
            ]
            assert functions  # the owner's functions: content, load, store...
            for function in functions:
                owner.execute(f"ALTER FUNCTION {function} SECURITY INVOKER")
            turn(roles)
        with roles.connect(roles.writer) as writer:
            writer.execute("INSERT INTO docs VALUES (4, 'written by the app')")
            writer.execute("UPDATE docs SET body = body || ' (edited)' WHERE id = 1")
            writer.execute("INSERT INTO docs VALUES (5, 'deleted by the app')")
            writer.execute("DELETE FROM docs WHERE id = 5")
        run_once(database_url=roles.worker_dsn, expect=exits.UNSERVED)
        with roles.connect() as su:
            su.execute("SELECT embeddings.sweep()")
            su.execute("SELECT * FROM embeddings_internal.complete_changes()")
            row = su.execute(
                "SELECT deferred_reason, pending_jobs FROM embeddings.status WHERE target_id = %s",
                (target,),
            ).fetchone()
            assert row is not None and "run as" in (row[0] or ""), row
            assert row[1] >= 4
            assert su.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
        with roles.connect(roles.writer) as writer:
            writer.execute("TRUNCATE docs")
    finally:
        with roles.connect() as su:
            su.execute("ALTER EVENT TRIGGER embeddings_follow_schema_changes ENABLE")
    # The clear trigger's function is the owner's: made SECURITY INVOKER, it runs as the writer,
    # as any trigger the owner puts on its table does.
    contained(roles, roles.writer)


def test_altering_a_generated_function_is_undone_by_the_event_trigger(roles: Roles) -> None:
    target = owner_docs(roles)
    content = f"embeddings.embeddings_{target}_content(docs)"
    attributes = "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = %s::regprocedure"
    with roles.connect(roles.owner) as owner:
        generated = owner.execute(attributes, (content,)).fetchone()
        owner.execute(f"ALTER FUNCTION {content} SECURITY INVOKER SET search_path = public")
        assert owner.execute(attributes, (content,)).fetchone() == generated
    # The owner's search path (its triggers and content function are written for it), pg_temp last.
    # No content formats here: the triggers call it for each row, and only compare (sql/32_access.sql).
    assert generated == (True, ['search_path="$user", public, pg_temp'])
    load = f"embeddings.embeddings_{target}_load_body(text[], text[])"
    with roles.connect(roles.owner) as owner:
        loaded = owner.execute(attributes, (load,)).fetchone()
        guard = owner.execute(attributes, (load.replace("_body", ""),)).fetchone()
    # What the worker embeds is evaluated in pinned formats (embeddings_internal.content_settings_sql()).
    assert loaded is not None and loaded[1][1:] == [
        "DateStyle=iso",
        "IntervalStyle=postgres",
        "standard_conforming_strings=on",
    ]
    # Its guard runs as its caller and sets nothing: it puts back its caller's settings
    # (create_access_function()).
    assert guard == (False, None)


def test_force_row_level_security_defers_the_target_with_its_reason(
    roles: Roles, run_once: Callable[..., Worker]
) -> None:
    """The functions run as the owner, whom FORCE ROW LEVEL SECURITY subjects to its policies:
    rows they cannot see must not be taken for deleted and their jobs acknowledged."""
    target = owner_docs(roles)
    with roles.connect(roles.owner) as owner:
        owner.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
        owner.execute("ALTER TABLE docs FORCE ROW LEVEL SECURITY")
        owner.execute("CREATE POLICY only_one ON docs USING (id = 1)")
    run_once(database_url=roles.worker_dsn, expect=exits.UNSERVED)
    with roles.connect() as su:
        row = su.execute(
            "SELECT problem, pending_jobs, embedded_rows FROM embeddings.status WHERE target_id = %s",
            (target,),
        ).fetchone()
        assert row is not None and "FORCE ROW LEVEL SECURITY" in (row[0] or ""), row
        assert row[1:] == (3, 0)
        assert su.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_reassign_owned_then_drop_owned_keeps_the_writes_working(
    roles: Roles, run_once: Callable[..., Worker]
) -> None:
    """The standard way to retire a role (issue 24 §4): the table and the functions generated
    for it move to the new owner together; the application's writes go on, and are served."""
    owner_docs(roles)
    with roles.connect() as su:
        su.execute(f"REASSIGN OWNED BY {roles.owner} TO {roles.tenant}")
        su.execute(f"DROP OWNED BY {roles.owner}")
    with roles.connect(roles.writer) as writer:
        writer.execute("INSERT INTO docs VALUES (4, 'after the owner left')")
        writer.execute("UPDATE docs SET body = 'edited after' WHERE id = 1")
    run_once(database_url=roles.worker_dsn)
    with roles.connect() as su:
        assert su.execute("SELECT count(embedding) FROM docs").fetchone() == (4,)
        assert su.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_the_owners_search_path_setting_is_data_not_sql(roles: Roles) -> None:
    """The functions run with the owner's search path (its triggers are written for it), which
    the owner sets itself: taken through the setting, never spliced into the DDL that the
    schema's owner runs."""
    with roles.connect(roles.owner) as owner:
        owner.execute(
            f"ALTER ROLE {roles.owner} SET search_path"
            f" = public, '\"; ALTER ROLE {roles.owner} SUPERUSER; --'"
        )
    target = owner_docs(roles)
    contained(roles)
    with roles.connect() as su:
        config = su.execute(
            "SELECT proconfig FROM pg_proc WHERE oid = %s::regprocedure",
            (f"embeddings.embeddings_{target}_load_body(text[], text[])",),
        ).fetchone()
    assert config is not None and "SUPERUSER" in config[0][0], config


def test_a_table_given_away_does_not_run_its_old_owners_function_with_the_new_owners_rights(
    roles: Roles,
) -> None:
    """ALTER TABLE ... OWNER TO another role: the functions follow the new owner, and the old
    owner's content function (which it may still redefine) would run with the new owner's
    rights: the target gets a problem instead, its functions and triggers go."""
    target = owner_docs(roles)
    with roles.connect() as su:
        su.execute(f"ALTER TABLE docs OWNER TO {roles.tenant}")
        problem = su.execute(
            "SELECT problem FROM embeddings.targets WHERE id = %s", (target,)
        ).fetchone()
        assert problem is not None and f"is owned by {roles.owner}" in (problem[0] or ""), problem
        generated = su.execute(
            "SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc WHERE proname ~ %s",
            (f"^embeddings_{target}_",),
        ).fetchone()
        # Only search's, which run as the searcher: its vectors stay searchable.
        assert generated == ([f"embeddings_{target}_search"],)
    turn(roles)
    with roles.connect(roles.writer) as writer:
        writer.execute("INSERT INTO docs VALUES (4, 'after the hand-over')")
    contained(roles)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("title_weight", [None, 2], ids=["one-field", "fields"])
def test_turning_full_text_search_on_runs_the_content_function_as_its_owner(
    roles: Roles, store: str, title_weight: float | None
) -> None:
    """With fields too: the owner's fill then runs embeddings_internal.fields_tsvector(), which the
    owner (any role) may execute."""
    owner_docs(roles, store=store)
    with roles.connect() as su:  # rows with vectors: enable_fts() fills their tsvectors
        if store == "row":
            su.execute("UPDATE docs SET embedding = array_fill(0.1::real, ARRAY[384])")
        else:
            su.execute(
                "INSERT INTO docs_embeddings SELECT id, array_fill(0.1::real, ARRAY[384]), 'x'"
                " FROM docs"
            )
    turn(roles)
    tsvectors = "docs" if store == "row" else "docs_embeddings"
    with roles.connect() as su:
        su.execute(
            "SELECT embeddings.enable_fts('docs', 'english', title_weight => %s)", (title_weight,)
        )
        assert su.execute(
            f"SELECT count(*) FROM {tsvectors} WHERE embedding_fts IS NULL"
        ).fetchone() == (0,)
    assert contained(roles)  # it ran, as the owner


def test_search_runs_with_the_callers_rights(roles: Roles) -> None:
    owner_docs(roles)
    with roles.connect() as su:
        su.execute("UPDATE docs SET embedding = array_fill(0.1::real, ARRAY[384])")
    query = "SELECT key FROM embeddings.search('docs', array_fill(0.1, ARRAY[384])::halfvec, 2)"
    with roles.connect(roles.writer) as writer:  # SELECT granted by the owner
        assert len(writer.execute(query).fetchall()) == 2
    with roles.connect(roles.worker) as worker, pytest.raises(psycopg.errors.InsufficientPrivilege):
        worker.execute(query)  # the worker role reads no user table, not even through search


@pytest.mark.parametrize("store", ["row", "side"])
def test_the_search_statements_are_not_the_owners_to_redefine(roles: Roles, store: str) -> None:
    """search() runs statements generated for each target (sql/58_search.sql) with its caller's
    rights. They are this schema's owner's, not the table owner's: an owner that could redefine
    them would run its code as everyone who searches its table."""
    target = owner_docs(roles, store=store)
    with roles.connect() as su:
        su.execute("SELECT embeddings.enable_fts('docs', 'english')")
        generated = su.execute(
            "SELECT p.proname, p.proowner::regrole::text, p.prosecdef FROM pg_proc p"
            " WHERE p.proname ~ %s ORDER BY 1",
            (f"^embeddings_{target}_(search|text_ranking|bm25_ranking|visible)$",),
        ).fetchall()
        schema_owner = su.execute(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'embeddings'"
        ).fetchone()
    assert schema_owner is not None
    assert generated == [
        (f"embeddings_{target}_bm25_ranking", schema_owner[0], False),  # sql/59_bm25.sql
        (f"embeddings_{target}_search", schema_owner[0], False),
        (f"embeddings_{target}_text_ranking", schema_owner[0], False),
        # what a reader of the side table runs (its policy, sql/56_side.sql)
        *([(f"embeddings_{target}_visible", schema_owner[0], False)] if store == "side" else []),
    ]
    with roles.connect(roles.owner) as owner:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            owner.execute(
                f"ALTER FUNCTION embeddings.embeddings_{target}_search(halfvec, jsonb, integer,"
                " boolean) SECURITY DEFINER"
            )
        if store == "side":
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                owner.execute(
                    f"CREATE OR REPLACE FUNCTION embeddings.embeddings_{target}_visible()"
                    " RETURNS TABLE (k0 integer) LANGUAGE sql STABLE"
                    " AS $$ SELECT length(public.payload()) $$"
                )
        for ranking in ("text_ranking", "bm25_ranking"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                owner.execute(
                    f"CREATE OR REPLACE FUNCTION embeddings.embeddings_{target}_{ranking}("
                    "text, jsonb, integer) RETURNS jsonb LANGUAGE sql"
                    " AS $$ SELECT public.payload()::jsonb $$"
                )
    query = (
        f"SELECT embeddings.embeddings_{target}_search(array_fill(0.1, ARRAY[384])::halfvec,"
        " NULL, 2, %s)"
    )
    for role in (roles.stranger, roles.worker):  # no SELECT on docs: the function gives none
        with roles.connect(role) as other:
            for exact in (False, True):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    other.execute(query, (exact,))
    if store == "side":  # a search reads the side table too
        with roles.connect(roles.owner) as owner:
            owner.execute(f"GRANT SELECT ON docs_embeddings TO {roles.writer}")
    with roles.connect(roles.writer) as writer:  # SELECT granted by the owner
        assert writer.execute(query, (True,)).fetchone() is not None
    contained(roles)
