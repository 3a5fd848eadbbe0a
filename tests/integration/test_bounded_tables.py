"""Our tables that grow with work stay bounded without sweep() scheduled (it is opt-in): the
worker prunes what it writes (QA ops2, finding 2: embeddings.throughput gained one row per
target per active minute, forever, unless sweep() ran; 1,000 tenants, 1.4M rows a day)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.fetch import fetch_value
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


@pytest.fixture
def worker_role(conn: Conn) -> Iterator[str]:
    name = f"embed_worker_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    conn.execute("SELECT embeddings.grant_worker(%s)", (name,))
    yield name
    conn.execute(f"DROP OWNED BY {name}")
    conn.execute(f"DROP ROLE {name}")


def test_the_worker_prunes_throughput_minutes_older_than_a_day(
    conn: Conn,
    dsn: str,
    worker_role: str,
    run_once: Callable[..., Worker],
    tiny_models: tuple[str, str],
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    target = fetch_value(
        conn, "SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],)
    )
    # 500 minutes this target was busy more than a day ago, with no sweep to delete them; and
    # 23 hours of the last day's
    conn.execute(
        "INSERT INTO embeddings.throughput (target_id, minute, rows)"
        " SELECT %s, date_trunc('minute', now()) - g * interval '1 minute', 1"
        " FROM generate_series(1, 23 * 60) g"
        " UNION ALL SELECT %s, date_trunc('minute', now()) - interval '1 day' - g * interval '1 minute', 1"
        " FROM generate_series(1, 500) g",
        (target, target),
    )
    conn.execute("INSERT INTO docs SELECT g, 'row ' || g FROM generate_series(1, 3) g")
    run_once(database_url=make_conninfo(dsn, user=worker_role), model=tiny_models[0])
    assert fetch_value(conn, "SELECT count(embedding) FROM docs") == 3
    old, recent = conn.execute(
        "SELECT count(*) FILTER (WHERE minute < now() - interval '1 day'),"
        "       count(*) FILTER (WHERE minute >= now() - interval '23 hours 1 minute')"
        " FROM embeddings.throughput WHERE target_id = %s",
        (target,),
    ).fetchone() or (None, None)
    assert (old, recent) in ((0, 23 * 60 + 1), (0, 23 * 60 + 2)), (old, recent)
