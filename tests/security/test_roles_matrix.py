"""The table of roles x actions of docs/security.md, each cell tried: every role attempts every
statement of every action (each attempt rolled back), and the table must say exactly what
Postgres let it do: a "yes" cell, every statement of the action runs; a "no" cell, every one
fails with a privilege error (any other error is a broken attempt, never a "no")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.security.conftest import Roles
from tests.support.docs import documented_rights
from tests.support.models import MINILM

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class World:
    target: int  # the owner's `docs`, watched


# How each action is attempted: statements, all of which a role that may do it runs, and none of
# which one that may not does. An action whose statements roles may do in part is two rows.
def _attempts(world: World) -> dict[str, list[str]]:
    load = f"embeddings.embeddings_{world.target}_load"
    blank = f"embeddings.embeddings_{world.target}_blank"
    return {
        "watch a table, unwatch it, change its model": [
            "SELECT embeddings.watch('spare', 'body')",
            "SELECT embeddings.unwatch('docs')",
            "SELECT embeddings.rewatch('docs', model => 'bge-small-en-v1.5')",
        ],
        "insert or update rows of a watched table (their keys are queued)": [
            "INSERT INTO docs VALUES (100, 'new')",
            "UPDATE docs SET body = 'edited' WHERE id = 1",
        ],
        "read a watched table's rows directly": ["SELECT count(*) FROM docs"],
        "read rows' content through the target's functions": [
            f"SELECT * FROM {load}(ARRAY['1'], ARRAY['1'])"
        ],
        "store or clear vectors through the target's functions": [
            f"SELECT {blank}(ARRAY['1'], ARRAY['1'], ARRAY[md5('text 1')])"
        ],
        "queue keys through `enqueue_keys()` or the inbox": [
            f"SELECT embeddings_internal.enqueue_keys({world.target}, ARRAY[1])",
            "INSERT INTO embeddings.inbox (target, keys, columns)"
            f""" VALUES ({world.target}, 1, '["{{1}}"]')""",
        ],
        "send, lease, acknowledge or retry jobs in a queue": [
            "SELECT pgmq.send('embedding_jobs', '{}')",
            "SELECT * FROM pgmq.read('embedding_jobs_backfill', 30, 1)",
        ],
        "record or resolve dead letters": [
            "INSERT INTO embeddings.failures (target_id, target, queue, message, attempts, last_error)"
            f" VALUES ({world.target}, 'docs', 'embedding_jobs', '{{}}', 1, 'x')",
            "DELETE FROM embeddings.failures",
        ],
        "record why a target's jobs wait (deferrals)": [
            f"SELECT embeddings_internal.note_deferrals(ARRAY[{world.target}], ARRAY['why'], ARRAY[1])",
            f"SELECT embeddings_internal.clear_deferrals(ARRAY[{world.target}])",
        ],
        "step backfills, complete model changes": [
            "SELECT * FROM embeddings_internal.backfill_next('embedding_jobs')",
            "SELECT * FROM embeddings_internal.complete_changes()",
        ],
        "read `embeddings.status`": ["SELECT * FROM embeddings.status"],
        "read the keys of queued and dead-lettered jobs (the queues, the inbox, `embeddings.failures`)": [
            "SELECT message FROM pgmq.q_embedding_jobs",
            "SELECT message FROM pgmq.q_embedding_jobs_backfill",
            "SELECT message FROM pgmq.a_embedding_jobs",
            "SELECT message FROM pgmq.a_embedding_jobs_backfill",
            "SELECT keys FROM embeddings.inbox",
            "SELECT row_key FROM embeddings.failures",
        ],
        "read where backfills and verifying sweeps are (`after_key`, `prune_after`: row keys)": [
            "SELECT after_key FROM embeddings.backfills",
            "SELECT after_key, prune_after FROM embeddings.verify_cursors",
        ],
        "read how far backfills and verifying sweeps got (`backfills` but its cursor, `verification`)": [
            "SELECT target_id, scanned_rows, stepped_at FROM embeddings.backfills",
            "SELECT * FROM embeddings.verification",
        ],
        "run `embeddings.sweep()` (also `verify => true`), `adopt_fingerprints()`": [
            "SELECT embeddings.sweep()",
            "SELECT embeddings.sweep(verify => true)",
            "SELECT embeddings.adopt_fingerprints('docs')",
        ],
        "record vectors' fingerprints (`record_fingerprints()`, in its write transaction)": [
            f"SELECT embeddings_internal.record_fingerprints({world.target}, false, ARRAY['1'], ARRAY['x'])"
        ],
        "register, change or unregister a model, or make one the default (`register_model()`,"
        " `unregister_model()`, `set_default_model()`, writing `embeddings.models`)": [
            "SELECT embeddings.register_model('spare', 8, 'openai', 'http://127.0.0.1:9/v1',"
            " credential => '')",
            "SELECT embeddings.unregister_model('no-such-model')",
            "SELECT embeddings.set_default_model('all-MiniLM-L6-v2')",
            "UPDATE embeddings.models SET endpoint = 'https://embed.evil.example'",
        ],
        "register, change or unregister a remote reranker (`register_reranker()`,"
        " `unregister_reranker()`, `embeddings.rerankers`)": [
            "SELECT embeddings.register_reranker('spare-rr', 'cohere')",
            "UPDATE embeddings.rerankers SET endpoint = 'https://rerank.evil.example'",
            "INSERT INTO embeddings.rerankers (name, provider, endpoint, max_documents, max_tokens,"
            " max_in_flight, timeout_seconds) VALUES ('own', 'tei', 'http://evil.example', 1, 1,"
            " 1, 1)",
            "SELECT embeddings.unregister_reranker('rr')",
        ],
        "read the registered remote rerankers (`embeddings.rerankers`: a key's name, never a"
        " key)": ["SELECT name, endpoint, remote_model, credential FROM embeddings.rerankers"],
    }


def attempt(conn: Conn, statement: str) -> str:
    """What `statement` did for the role (nothing of it stays: rolled back): "ran", "refused"
    (a privilege error), or the other error it raised."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return "refused"
    except psycopg.Error as e:
        return f"{type(e).__name__}: {e}"
    return "ran"


@pytest.fixture
def world(roles: Roles) -> World:
    with roles.connect(roles.owner) as owner:
        for table in ("docs", "spare"):
            owner.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
            owner.execute(
                f"INSERT INTO {table} SELECT g, 'text ' || g FROM generate_series(1, 3) g"
            )
        owner.execute(f"GRANT SELECT, INSERT, UPDATE ON docs TO {roles.writer}")
    with roles.connect() as su:
        row = su.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MINILM,))
        found = row.fetchone()
        su.execute("SELECT embeddings.register_reranker('rr', 'cohere')")
    assert found is not None
    return World(target=int(found[0]))


COLUMNS: dict[str, Callable[[Roles], str | None]] = {
    "superuser (migrator)": lambda r: None,  # the fixture's superuser
    "table owner": lambda r: r.owner,
    "application writer": lambda r: r.writer,
    "worker role": lambda r: r.worker,
    "login without grants": lambda r: r.stranger,
    "monitoring login (`pg_monitor`)": lambda r: r.monitor,
}


def test_the_documented_actions_are_the_tried_ones() -> None:
    documented = documented_rights()
    assert set(documented) == set(_attempts(World(target=1)))
    for cells in documented.values():
        assert set(cells) == set(COLUMNS)


@pytest.mark.parametrize("action", sorted(documented_rights()))
def test_each_role_may_do_what_the_table_says(roles: Roles, world: World, action: str) -> None:
    statements = _attempts(world)[action]
    wrong = []
    for column, may in documented_rights()[action].items():
        with psycopg.connect(roles.dsn_of(COLUMNS[column](roles))) as conn:
            for statement in statements:
                outcome = attempt(conn, statement)
                if outcome != ("ran" if may else "refused"):
                    wrong.append((column, "yes" if may else "no", statement, outcome))
    assert wrong == [], "cells the table gets wrong (role, cell, statement, outcome):\n" + (
        "\n".join(map(repr, wrong))
    )
