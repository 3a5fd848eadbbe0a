"""What a newcomer sees: why jobs wait, blank rows as cleared, a default model for watch(),
the Supabase guide's triggers never doubled, dead letters resolved once their row is embedded."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.integration.test_supabase import GUIDE_SETUP
from tests.support import stores
from tests.support.fetch import fetch_value
from tests.support.jobs import dead_letters
from tests.support.process import run_cli
from worker import exits, queries
from worker.cli import doctor
from worker.config import Settings
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


def status_row(conn: Conn, table: str = "docs") -> dict[str, Any]:
    cur = conn.execute(
        "SELECT * FROM embeddings.status WHERE target = %s", (f"public.{table}.embedding",)
    )
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def test_status_says_why_jobs_wait_until_the_target_is_served(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    stores.watch_absent_model(conn)

    run_once(expect=exits.UNSERVED)

    row = status_row(conn)
    assert row["pending_jobs"] == 1
    assert "model 'absent-model'" in row["deferred_reason"]
    assert row["deferred_since"] is not None

    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    for lane in ("q_embedding_jobs", "q_embedding_jobs_backfill"):  # the deferral's wait, skipped
        conn.execute(f"UPDATE pgmq.{lane} SET vt = now()")
    run_once()

    row = status_row(conn)
    assert (row["pending_jobs"], row["embedded_rows"], row["deferred_reason"]) == (0, 1, None)
    assert conn.execute("SELECT count(*) FROM embeddings.deferrals").fetchone() == (0,)


def test_blank_rows_count_as_cleared(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    stores.watched_table(conn, minilm, "VALUES (1, 'hello'), (2, '   '), (3, NULL), (4, E'\\t\\n')")
    run_once()

    row = status_row(conn)
    assert (row["total_rows"], row["embedded_rows"], row["cleared_rows"]) == (4, 1, 3)


def test_watch_follows_the_database_default_model(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body')")

    assert conn.execute("SELECT embeddings.set_default_model('all-MiniLM-L6-v2')").fetchone() == (
        "all-MiniLM-L6-v2",
    )
    conn.execute("SELECT embeddings.watch('notes', 'body')")

    models = dict(
        conn.execute("SELECT source::text, model FROM embeddings.targets ORDER BY id").fetchall()
    )
    assert models == {"docs": "gte-small", "notes": "all-MiniLM-L6-v2"}
    assert conn.execute("SELECT name FROM embeddings.models WHERE is_default").fetchall() == [
        ("all-MiniLM-L6-v2",)
    ]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match='unknown model "nope"'):
        conn.execute("SELECT embeddings.set_default_model('nope')")


def test_watch_again_without_a_model_keeps_the_table_s_model(conn: Conn) -> None:
    """A setup script run again after the default changed (set_default_model(): "watched
    tables keep theirs") started a model change of every table it watched: a whole re-embed,
    with no word. Without a model, watch() of a watched table keeps its model, or the model a
    change in progress moves it to; another model is named to change it."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'hello')")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    conn.execute("SELECT embeddings.set_default_model('all-MiniLM-L6-v2')")

    conn.execute("SELECT embeddings.watch('docs', 'body', clear_on_update => true)")

    assert conn.execute("SELECT model FROM embeddings.targets").fetchall() == [("gte-small",)]
    assert conn.execute("SELECT count(*) FROM embeddings.model_changes").fetchone() == (0,)
    # Named, it changes; watch() again without a model then keeps that change going.
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    conn.execute("SELECT embeddings.set_default_model('gte-small')")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    assert conn.execute("SELECT model FROM embeddings.model_changes").fetchall() == [
        ("all-MiniLM-L6-v2",)
    ]


def test_watch_refuses_to_double_the_guides_triggers(conn: Conn) -> None:
    conn.execute(GUIDE_SETUP)

    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as info:
        conn.execute("SELECT embeddings.watch('documents', 'embedding_input')")

    assert "util.queue_embeddings triggers" in str(info.value)
    hint = info.value.diag.message_hint or ""
    assert "triggers => false" in hint
    assert "DROP TRIGGER embed_documents_on_insert ON public.documents;" in hint
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (0,)
    # Either explicit choice works.
    conn.execute("SELECT embeddings.watch('documents', 'embedding_input', triggers => false)")


def test_dead_letters_of_rows_embedded_later_are_resolved(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    target = stores.watched_table(conn, minilm, "VALUES (1, 'hello'), (2, 'world')")
    # Both rows were dead-lettered once (say, a content function that raised back then).
    dead_letters(conn, [1, 2], target_id=target)
    for lane in ("q_embedding_jobs", "q_embedding_jobs_backfill"):  # watch()'s are on the second
        conn.execute(f"DELETE FROM pgmq.{lane} WHERE message->'keys' @> '[2]'")
        conn.execute(f"DELETE FROM pgmq.{lane} WHERE message->'keys' @> '[1]'")
    conn.execute("UPDATE docs SET body = 'hello again' WHERE id = 1")  # row 1 re-queued

    run_once()

    keys = conn.execute("SELECT row_key FROM embeddings.failures").fetchall()
    assert keys == [(2,)]  # row 1 was embedded; row 2 still has no embedding
    assert status_row(conn)["failed_jobs"] == 1


def test_a_written_rows_dead_letter_is_found_by_its_key_not_compared_with_every_letter(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    """Every batch the worker writes removes its rows' dead letters (resolve_failures). Its
    join compared each row with every dead letter of the target (a filter no index served): a
    batch of 128 rows took 4 s beside 100,000 dead letters of other rows. The rows are joined
    with the letters by key now, and still resolved by either form of their key."""
    target = stores.watched_table(conn, minilm, "VALUES (1, 'hello'), (2, 'world')")
    dead_letters(conn, [1, "2", *range(1001, 6001)], target_id=target)
    conn.execute("ANALYZE embeddings.failures")
    resolve = sql.SQL("EXPLAIN (COSTS OFF) ") + queries.compose("resolve_failures")
    keys = [str(k) for k in range(1, 129)]
    params = {"target_ids": [target] * 128, "keys": keys, "raw_keys": [Jsonb(int(k)) for k in keys]}
    plan = "\n".join(row[0] for row in conn.execute(resolve, params).fetchall())
    # Joined by key (hashed, or looked up in the key's index), never a filter of every pair.
    assert "Join Filter" not in plan and "row_key" in plan.split("Cond: ", 1)[1], plan

    run_once()  # rows 1 and 2 embedded: their letters go, by value (1) and by text ("2")

    assert fetch_value(conn, "SELECT count(*) FROM embeddings.failures") == 5000
    left = "SELECT count(*) FROM embeddings.failures WHERE row_key IN ('1', '\"2\"')"
    assert fetch_value(conn, left) == 0


def test_a_row_that_fails_again_keeps_one_dead_letter_its_latest(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    """A row whose content keeps failing (its content function raises, and the application
    keeps updating it) was dead-lettered once per job: a hot row piled up dead letters without
    bound, `status` counted each, and `failures --retry` queued each again. A row keeps one,
    the latest; another row's and another target's are its own."""
    stores.watch_poisoned(
        conn, minilm, "id int PRIMARY KEY, body text", "(1, 'poison 1'), (2, 'poison 2'), (3, 'ok')"
    )
    run_once(max_attempts=1)
    for n in range(2, 5):  # the application writes it again, still poisoned
        conn.execute("UPDATE docs SET body = %s WHERE id = 1", (f"poison 1, take {n}",))
        run_once(max_attempts=1)
    # Two jobs of one row failing in the same batch leave one as well.
    conn.execute("UPDATE docs SET body = 'poison 2, again' WHERE id = 2")
    conn.execute(
        "SELECT pgmq.send('embedding_jobs', jsonb_build_object('target', t.id, 'keys', '[2]'::jsonb))"
        " FROM embeddings.targets t"
    )
    run_once(max_attempts=1)
    letters = conn.execute(
        "SELECT row_key::int, last_error FROM embeddings.failures ORDER BY row_key"
    ).fetchall()
    assert [k for k, _ in letters] == [1, 2], letters
    assert "no poison 1, take 4" in letters[0][1] and "no poison 2, again" in letters[1][1]
    assert status_row(conn)["failed_jobs"] == 2
    assert conn.execute("SELECT embeddings.retry_failures()").fetchone() == (2,)


def test_a_target_without_its_embedding_column_is_deferred_and_shown(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    for table in ("docs", "notes"):
        stores.watched_table(conn, minilm, "VALUES (1, 'hello')", table)
    # Renames are followed by an event trigger, which only a superuser can install: without
    # it (as on managed servers), the registration still names the old column.
    conn.execute("ALTER EVENT TRIGGER embeddings_follow_schema_changes DISABLE")
    conn.execute("ALTER TABLE docs RENAME COLUMN embedding TO old_embedding")

    run_once(expect=exits.UNSERVED)  # docs' job left, held

    assert conn.execute("SELECT embedding IS NOT NULL FROM notes").fetchone() == (True,)
    reasons = dict(conn.execute("SELECT target, deferred_reason FROM embeddings.status").fetchall())
    assert "embedding column embedding is missing" in reasons["public.docs.embedding"]
    assert reasons["public.notes.embedding"] is None


def test_jobs_held_for_a_model_that_cannot_load_show_as_held_with_the_reason(
    conn: Conn, dsn: str, run_once: Callable[..., Worker]
) -> None:
    """Not as `deferred`, the word of a retry's backoff: operators must tell "waiting on a model
    that cannot load" from "failed, retried later" (status, --json, doctor alike). `run --once`
    says so too: exit 3 and a line naming what it left and why (it exited 0, so that a cron
    job or CI step took the held jobs for done)."""
    stores.watch_absent_model(conn, "(1, 'hello'), (2, 'world')")
    run_once(expect=exits.UNSERVED)

    env = {"DATABASE_URL": dsn}
    again = run_cli("run", "--once", "--no-progress", env=env)  # the jobs wait out their minute
    assert again.returncode == exits.UNSERVED == 3, again.stderr
    (said,) = [line for line in again.stderr.splitlines() if "run --once left" in line]
    assert "left 2 job(s) of 1 table(s) it could not serve (held, not failed)" in said, said
    assert "public.docs.embedding: 2 job(s), " in said and "absent-model" in said, said
    found = run_cli("status", "--json", env=env, check=True)
    (row,) = json.loads(found.stdout)
    assert row["held_jobs"] == row["pending_jobs"] == 2
    assert "model 'absent-model'" in row["deferred_reason"]
    assert [s["state"] for s in row["stopped"]] == ["held"]
    assert "jobs are held, put back without an attempt (not failed)" in row["stopped"][0]["reason"]
    assert "model 'absent-model'" in row["stopped"][0]["reason"]

    text = run_cli("status", env=env, check=True).stdout
    assert "held (see below)" in text and "stopped (held)" in text
    assert "deferred" not in text
    doctor = run_cli("doctor", env=env).stdout
    assert "stopped (held): its jobs are held" in doctor


def test_a_redefined_target_no_longer_shows_the_old_definitions_hold(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    """A worker's deferral says why the target as it was then cannot be served. Once `watch()`
    redefined it (the held fix, moving it to a model the worker has), status went on saying
    `held` for the old model, beside a fix naming the new one, until a worker served it: up to
    five minutes with none running. The deferral counts only if seen since the redefinition."""
    stores.watch_absent_model(conn, "(1, 'hello'), (2, 'world')")
    run_once(expect=exits.UNSERVED)
    assert [r[0] for r in conn.execute("SELECT state FROM embeddings.stopped")] == ["held"]

    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))

    row = status_row(conn)
    assert (row["deferred_reason"], row["held_jobs"]) == (None, 0)
    assert row["pending_jobs"] > 0
    assert conn.execute("SELECT state FROM embeddings.stopped").fetchall() == []
    run_once()
    assert status_row(conn)["embedded_rows"] == 2


@pytest.mark.parametrize("store", stores.ALL_STORES)
def test_jobs_held_by_a_column_of_other_dimensions_get_a_fix_that_fits_the_column(
    conn: Conn,
    dsn: str,
    settings: Settings,
    run_once: Callable[..., Worker],
    minilm: str,
    store: str,
) -> None:
    """A column whose dimensions are not the model's holds the jobs of a model that loads:
    the fix `status` and `doctor` print alters the column (it said to make the loaded model
    loadable), and it works as pasted; doctor asks nobody whether a worker runs beside the
    held target's old jobs (a worker held them)."""
    stores.texts_table(conn, {1: "hello", 2: "world"})
    options: dict[str, Any] = {"side": {"store": "side"}, "chunks": {"chunk_tokens": 64}}
    stores.watch_with(conn, model=minilm, **options.get(store, {}))
    store_table = fetch_value(conn, "SELECT store_table::text FROM embeddings.targets")
    conn.execute(f"ALTER TABLE {store_table} ALTER COLUMN embedding TYPE halfvec(10) USING NULL")
    run_once(expect=exits.UNSERVED)
    fix = str(fetch_value(conn, "SELECT fix FROM embeddings.stopped WHERE state = 'held'"))
    assert "loadable" not in fix and "model download" not in fix, fix
    assert "produces 384 dimensions, the column holds 10" in fix, fix

    for lane in ("embedding_jobs", "embedding_jobs_backfill"):  # jobs an hour old
        conn.execute(f"UPDATE pgmq.q_{lane} SET enqueued_at = now() - interval '1 hour'")
    found = doctor.check(dsn, settings)
    assert not [f for f in found if "is a worker running?" in f.fix], found
    held = [f for f in found if f.check == "target public.docs.embedding"]
    assert [f.fix for f in held] == [fix]

    altered = re.search(r"ALTER TABLE .*? USING NULL;", fix)
    assert altered is not None, fix
    conn.execute(altered.group(0))
    run_once()
    assert fetch_value(conn, "SELECT embedded_rows FROM embeddings.status") == 2


@pytest.mark.parametrize(
    ("store", "column"), [*((s, "embedding") for s in stores.ALL_STORES), ("row", "vec")]
)
def test_the_held_fix_s_watch_moves_the_target_to_a_model_the_worker_has(
    conn: Conn, run_once: Callable[..., Worker], minilm: str, store: str, column: str
) -> None:
    """The fix `status` and `doctor` print for jobs held on a model the worker lacks is a
    statement to paste: with NAME filled in, it must run on that target as it is and keep what
    the target is (a chunked target re-watched without chunk_tokens is refused; without its
    embedding_column, watch() would start another target)."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 384, 512, 'mean')"
    )
    stores.texts_table(conn, {1: "hello", 2: "world"})
    by_store: dict[str, dict[str, Any]] = {
        "side": {"store": "side"},
        "chunks": {"chunk_tokens": 64},
    }
    options = by_store.get(store, {})
    stores.watch_with(conn, model="absent-model", embedding_column=column, **options)
    run_once(expect=exits.UNSERVED)
    fix = str(fetch_value(conn, "SELECT fix FROM embeddings.stopped WHERE state = 'held'"))
    found = re.search(r"SELECT embeddings\.watch\(.*?\);", fix)
    assert found is not None, fix
    conn.execute(found.group(0).replace("'NAME'", f"'{minilm}'"))
    run_once()
    assert conn.execute(
        "SELECT model, store_kind, embedding_column FROM embeddings.targets"
    ).fetchall() == [(minilm, store, column)]
    assert fetch_value(conn, "SELECT embedded_rows FROM embeddings.status") == 2
