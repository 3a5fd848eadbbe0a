"""embeddings.sweep(verify => true) (issue 25 §1): each stored vector has a fingerprint of the
content and definition it was made from, so writes our triggers never saw cannot leave a stale
vector: the verifying sweep finds each one and a worker repairs it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC
from typing import Any

import psycopg

from tests.support import stores
from tests.support.jobs import clear_queue, queued_keys, verify, write_unseen
from tests.support.process import run_cli
from worker.cli import doctor
from worker.cli.findings import Finding
from worker.config import Settings
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
RunOnce = Callable[..., Worker]


def embedded_docs(
    conn: Conn, minilm: str, run_once: RunOnce, store: str = "row", content: str = "body"
) -> int:
    """Watches `docs` (its vectors in `store`, its content from `content`), runs a worker, and
    checks that every vector verifies; returns the target id."""
    target = stores.watch(conn, store, minilm, content=content)
    run_once()
    assert verify(conn) == 0  # every vector is that of its content
    return target


def watched_docs(conn: Conn, minilm: str, run_once: RunOnce, *, partitioned: bool = False) -> int:
    if partitioned:
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE docs_low PARTITION OF docs FOR VALUES FROM (0) TO (100)")
        conn.execute("CREATE TABLE docs_high PARTITION OF docs FOR VALUES FROM (100) TO (200)")
        conn.execute(
            "INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta'), (101, 'gamma'), (102, 'delta')"
        )
    else:
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma'), (4, 'delta')"
        )
    return embedded_docs(conn, minilm, run_once)


def assert_as_embedded_afresh(conn: Conn, run_once: RunOnce, model: str, text: str) -> None:
    """Every row of `docs` holds the vector that a table of the same text (`text`, an expression
    over a row of docs) gets, embedded afresh with `model`."""
    conn.execute("CREATE TABLE fresh (id bigint PRIMARY KEY, body text)")
    conn.execute(f"INSERT INTO fresh SELECT id, {text} FROM docs")
    conn.execute("SELECT embeddings.watch('fresh', 'body', model => %s)", (model,))
    run_once()
    differing = conn.execute(
        "SELECT d.id FROM docs d JOIN fresh f USING (id)"
        " WHERE (d.embedding <=> f.embedding) > 0.001 OR d.embedding IS NULL"
    ).fetchall()
    assert differing == []


def assert_current(conn: Conn, run_once: RunOnce, target: int, keys: list[int]) -> None:
    """The verifying sweep queued exactly `keys`; once a worker ran, every row holds the vector
    of its current content (a row of the same text, embedded afresh, has the same vector)."""
    assert sorted(queued_keys(conn, target)) == keys
    run_once()
    assert verify(conn) == 0
    model = conn.execute("SELECT model FROM embeddings.targets WHERE id = %s", (target,)).fetchone()
    assert model is not None
    assert_as_embedded_afresh(conn, run_once, model[0], "body")


def test_an_update_under_replica_role_is_found(conn: Conn, minilm: str, run_once: RunOnce) -> None:
    target = watched_docs(conn, minilm, run_once)
    conn.execute("SET session_replication_role = replica")
    conn.execute("UPDATE docs SET body = 'written as a replica' WHERE id = 2")
    conn.execute("RESET session_replication_role")
    assert queued_keys(conn, target) == []  # the triggers did not see it
    assert conn.execute("SELECT embeddings.sweep()").fetchone() == (0,)  # nor does sweep()
    assert verify(conn) == 1
    assert_current(conn, run_once, target, [2])


def test_a_disable_trigger_window_is_found(conn: Conn, minilm: str, run_once: RunOnce) -> None:
    target = watched_docs(conn, minilm, run_once)
    write_unseen(conn, "UPDATE docs SET body = body || ' (edited)' WHERE id IN (1, 3)")
    assert queued_keys(conn, target) == []
    assert verify(conn) == 2
    assert_current(conn, run_once, target, [1, 3])


def test_a_partition_detached_edited_and_attached_is_found(
    conn: Conn, minilm: str, run_once: RunOnce
) -> None:
    target = watched_docs(conn, minilm, run_once, partitioned=True)
    conn.execute("ALTER TABLE docs DETACH PARTITION docs_high")
    conn.execute("UPDATE docs_high SET body = 'edited while detached' WHERE id = 102")
    conn.execute("ALTER TABLE docs ATTACH PARTITION docs_high FOR VALUES FROM (100) TO (200)")
    clear_queue(conn)  # whatever the attach queued, the sweep alone must find the edited row
    assert verify(conn) == 1
    assert_current(conn, run_once, target, [102])


def test_a_restore_with_triggers_off_is_found(conn: Conn, minilm: str, run_once: RunOnce) -> None:
    """A data-only restore (pg_restore --disable-triggers) of a dump taken while an edit's job
    was still queued: the rows come back with the edit, their vectors with the content before
    it, and no job."""
    target = watched_docs(conn, minilm, run_once)
    with conn.cursor().copy("COPY (SELECT id, body, embedding FROM docs) TO STDOUT") as copy:
        dump = b"".join(bytes(chunk) for chunk in copy)
    dump = dump.replace(b"\tbeta\t", b"\tbeta, edited before the dump\t")
    conn.execute("ALTER TABLE docs DISABLE TRIGGER ALL")
    conn.execute("DELETE FROM docs")
    with conn.cursor().copy("COPY docs (id, body, embedding) FROM STDIN") as copy:
        copy.write(dump)
    conn.execute("ALTER TABLE docs ENABLE TRIGGER ALL")
    clear_queue(conn)
    assert verify(conn) == 1
    assert_current(conn, run_once, target, [2])


def test_a_re_registration_whose_content_function_raises_leaves_no_old_vector(
    conn: Conn, minilm: str, run_once: RunOnce
) -> None:
    target = watched_docs(conn, minilm, run_once)
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE plpgsql STABLE AS $$"
        " BEGIN IF d.id = 2 THEN RAISE EXCEPTION 'no text for %', d.id; END IF;"
        " RETURN 'title: ' || d.body; END $$"
    )
    conn.execute("SELECT embeddings.watch('docs', 'doc_text', model => %s)", (minilm,))
    # Whatever watch() queued, the old definition's vectors all fail verification.
    clear_queue(conn)
    assert verify(conn) == 4
    for _ in range(4):  # retries until the row is dead-lettered (max_attempts 3)
        run_once()
    assert conn.execute("SELECT embedding IS NULL FROM docs WHERE id = 2").fetchone() == (True,)
    failure = conn.execute(
        "SELECT last_error FROM embeddings.failures WHERE target_id = %s AND row_key = '2'",
        (target,),
    ).fetchone()
    assert failure is not None and "no text for 2" in failure[0]
    assert verify(conn) == 0  # the failure waits for `failures --retry`, not for the sweep
    rows = conn.execute("SELECT id FROM docs WHERE embedding IS NOT NULL ORDER BY id").fetchall()
    assert rows == [(1,), (3,), (4,)]


def test_a_replaced_content_function_is_found(conn: Conn, minilm: str, run_once: RunOnce) -> None:
    """CREATE OR REPLACE FUNCTION of a watched table's content function keeps its oid (the
    definition is the same to the triggers, which never see the change): the rows whose text
    it changes are found by the text they give now."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma'), (4, 'delta')")
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE"
        " AS $$ SELECT 'title: ' || d.body $$"
    )
    target = embedded_docs(conn, minilm, run_once, content="doc_text")
    conn.execute(
        "CREATE OR REPLACE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE"
        " AS $$ SELECT CASE WHEN d.id % 2 = 0 THEN 'heading: ' ELSE 'title: ' END || d.body $$"
    )
    assert queued_keys(conn, target) == []  # no trigger saw it
    assert verify(conn) == 2
    assert sorted(queued_keys(conn, target)) == [2, 4]
    run_once()
    assert verify(conn) == 0
    # Each row holds the vector of the function's text now: as a column of that text gets.
    assert_as_embedded_afresh(conn, run_once, minilm, "doc_text(docs)")


def test_a_content_function_reading_another_table_is_found(
    conn: Conn, minilm: str, run_once: RunOnce
) -> None:
    conn.execute("CREATE TABLE authors (id bigint PRIMARY KEY, name text)")
    conn.execute("INSERT INTO authors VALUES (1, 'Ada'), (2, 'Grace')")
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, author bigint, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 1, 'alpha'), (2, 2, 'beta'), (3, 1, 'gamma')")
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE"
        " AS $$ SELECT d.body || ' by ' || a.name FROM authors a WHERE a.id = d.author $$"
    )
    target = embedded_docs(conn, minilm, run_once, content="doc_text")
    conn.execute("UPDATE authors SET name = 'Ada Lovelace' WHERE id = 1")
    assert queued_keys(conn, target) == []  # the rows of docs did not change
    assert verify(conn) == 2
    assert sorted(queued_keys(conn, target)) == [1, 3]
    run_once()
    assert verify(conn) == 0


def test_verification_is_bounded_per_call_and_reported(
    conn: Conn, minilm: str, run_once: RunOnce
) -> None:
    target = watched_docs(conn, minilm, run_once)
    conn.execute("SET session_replication_role = replica")
    conn.execute("UPDATE docs SET body = body || '!'")
    conn.execute("RESET session_replication_role")
    assert [verify(conn, max_rows=3), verify(conn, max_rows=3)] == [3, 1]
    row = conn.execute(
        "SELECT verified_rows, last_verified IS NOT NULL, queued_by_last_pass, pass_rows"
        " FROM embeddings.verification WHERE target_id = %s",
        (target,),
    ).fetchone()
    assert row == (4, True, 4, 0)
    assert verify(conn, max_rows=3) == 0  # a new pass: all four are pending now


def assert_an_unseen_edit_is_found_and_embedded(conn: Conn, target: int, run_once: RunOnce) -> None:
    """Row 2's body edited where no trigger sees it ('beta, edited unseen'): the verifying
    pass finds and queues it alone, and once the worker has run every vector is current."""
    write_unseen(conn, "UPDATE docs SET body = 'beta, edited unseen' WHERE id = 2")
    assert verify(conn) == 1
    assert queued_keys(conn, target) == [2]
    run_once()
    assert verify(conn) == 0


def test_a_chunked_target_is_verified_too(conn: Conn, minilm: str, run_once: RunOnce) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta')")
    target = embedded_docs(conn, minilm, run_once, "chunks")  # (chunks of 64 tokens)
    assert_an_unseen_edit_is_found_and_embedded(conn, target, run_once)
    chunk = conn.execute("SELECT chunk FROM docs_chunks WHERE id = 2").fetchone()
    assert chunk is not None and "edited unseen" in chunk[0]


def test_the_cli_sweeps_with_verification_and_status_reports_it(
    conn: Conn, dsn: str, minilm: str, run_once: RunOnce
) -> None:
    target = watched_docs(conn, minilm, run_once)
    conn.execute("SET session_replication_role = replica")
    conn.execute("UPDATE docs SET body = 'unseen' WHERE id = 4")
    conn.execute("RESET session_replication_role")
    env = {"DATABASE_URL": dsn}
    found = run_cli("sweep", "--verify", "--json", env=env, check=True)
    result = json.loads(found.stdout)
    assert result["queued"] == 1
    assert [v["verified_rows"] for v in result["verification"]] == [4]
    assert queued_keys(conn, target) == [4]
    shown = run_cli("status", "--json", env=env, check=True)
    (status,) = json.loads(shown.stdout)
    assert status["verified_rows"] == 4 and status["last_verified"] is not None
    table = run_cli("status", env=env, check=True)
    assert "4 row(s) verified against their content by the pass finished" in table.stdout


def test_vectors_from_before_fingerprints_are_queued_unless_adopted(
    conn: Conn, minilm: str, run_once: RunOnce
) -> None:
    target = watched_docs(conn, minilm, run_once)
    conn.execute("DELETE FROM embeddings.fingerprints")  # as after an upgrade from 0.1
    assert verify(conn) == 4  # nothing says what they were made from: embedded again
    clear_queue(conn)
    assert conn.execute("SELECT embeddings.adopt_fingerprints('docs')").fetchone() == (4,)
    assert verify(conn) == 0
    assert queued_keys(conn, target) == []


def test_a_model_change_leaves_every_vector_verified(
    conn: Conn, run_once: RunOnce, tiny_models: tuple[str, str]
) -> None:
    """The shadow column's vectors get fingerprints of the new model as they are written; after
    the swap they are the target's, with no rewrite of the fingerprints."""
    first, second = tiny_models
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'document ' || g FROM generate_series(1, 6) g")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (first,))
    run_once(model=first)
    assert verify(conn) == 0
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (second,))
    assert verify(conn) == 0  # the old model's vectors serve, and are current, until the swap
    run_once(model=first)
    conn.execute("SELECT * FROM embeddings_internal.complete_changes()")
    row = conn.execute("SELECT model FROM embeddings.targets").fetchone()
    assert row == (second,)
    assert verify(conn) == 0
    # The replaced column's fingerprints went with it: pruned by that pass.
    fingerprints = "SELECT count(*), count(DISTINCT slot) FROM embeddings.fingerprints"
    assert conn.execute(fingerprints).fetchone() == (6, 1)
    conn.execute("UPDATE docs SET body = 'edited' WHERE id = 3")  # seen by the triggers
    clear_queue(conn)  # and its job lost: the vector was cleared, the sweep queues it
    assert verify(conn) == 1


def test_a_side_table_target_is_verified_too(conn: Conn, minilm: str, run_once: RunOnce) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma')")
    target = embedded_docs(conn, minilm, run_once, "side")
    before = conn.execute("SELECT embedding::text FROM docs_embeddings WHERE id = 2").fetchone()
    assert_an_unseen_edit_is_found_and_embedded(conn, target, run_once)
    after = conn.execute("SELECT embedding::text FROM docs_embeddings WHERE id = 2").fetchone()
    assert after is not None and after != before
    # A re-registration whose content function raises for a row: its side row goes.
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE plpgsql STABLE AS $$"
        " BEGIN IF d.id = 3 THEN RAISE EXCEPTION 'no text'; END IF; RETURN d.body; END $$"
    )
    conn.execute(
        "SELECT embeddings.watch('docs', 'doc_text', model => %s, store => 'side')", (minilm,)
    )
    clear_queue(conn)
    assert verify(conn) == 3
    run_once()
    assert conn.execute("SELECT id FROM docs_embeddings ORDER BY id").fetchall() == [(1,), (2,)]


def test_doctor_says_when_the_vectors_were_last_verified(
    conn: Conn, dsn: str, minilm: str, run_once: RunOnce, settings: Settings
) -> None:
    """ "Are all my vectors current?": doctor warns while a watched table has no verifying pass
    finished within EMBED_VERIFY_MAX_AGE_SECONDS (or none at all), with how to schedule one,
    and says when the last pass finished."""

    def finding() -> Finding:
        (found,) = [f for f in doctor.check(dsn, settings) if f.check == "verification"]
        return found

    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    run_once()
    # Watched a moment ago: no pass is due yet, nothing to warn about (issue 37).
    not_due = finding()
    assert not_due.level == "ok" and "due" in not_due.detail, not_due
    conn.execute("UPDATE embeddings.targets SET created_at = now() - interval '9 days'")
    never = finding()
    assert never.level == "warn" and "1 of 1 watched table(s)" in never.detail
    assert "docs.embedding (never)" in never.detail
    assert "sweep --verify" in never.fix
    # schedule_sweep() is offered only where pg_cron runs jobs: in cron.database_name's database.
    cron_here = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron')"
    ).fetchone() == (True,)
    offered = "SELECT embeddings.schedule_sweep(verify => true);" in never.fix
    assert offered == cron_here, never.fix
    if not cron_here:
        assert "pg_cron cannot run jobs in this database" in never.fix

    verify(conn)  # one slice: the whole table, so the pass finished
    row = conn.execute("SELECT last_verified FROM embeddings.verification").fetchone()
    assert row is not None and row[0] is not None
    finished = row[0]
    fresh = finding()
    assert fresh.level == "ok", fresh
    assert finished.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") in fresh.detail

    conn.execute(
        "UPDATE embeddings.verify_cursors SET last_pass_finished = now() - interval '9 days'"
    )
    old = finding()
    assert old.level == "warn" and "docs.embedding (last pass finished " in old.detail
    assert "216.0 h ago" in old.detail
    settings = settings.with_overrides(verify_max_age_seconds=10 * 86400)
    assert finding().level == "ok"


def test_verification_names_targets_as_status_and_failures_do(
    conn: Conn, minilm: str, run_once: RunOnce
) -> None:
    """verification.target was the regclass text, which drops the schema on the caller's
    search_path (`docs.embedding`, where status says `public.docs.embedding`): joined on target,
    the two lost every row of a table in public."""
    watched_docs(conn, minilm, run_once)
    conn.execute("SET search_path = public, pg_catalog")
    verify(conn)
    joined = conn.execute(
        "SELECT s.target FROM embeddings.status s JOIN embeddings.verification v USING (target)"
    ).fetchall()
    assert joined == [("public.docs.embedding",)]
