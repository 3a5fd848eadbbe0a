"""`embed-worker plan`: rows, tokens, requests and cost before a backfill or a model change."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.integration.test_cli import run_cli
from worker import db, exceptions
from worker.cli import plan

Conn = psycopg.Connection[Any]
BODY = "x" * 299 + " "  # 300 bytes: 100 estimated tokens


@pytest.fixture
def priced(conn: Conn) -> str:
    conn.execute(
        "SELECT embeddings.register_model('te3-small', 1536, 'openai',"
        " 'https://api.openai.com/v1', 'text-embedding-3-small', max_inputs => 100,"
        " max_request_tokens => 5000, price_per_million_tokens => 0.02)"
    )
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, %s FROM generate_series(1, 300) g", (BODY,))
    return "te3-small"


def test_a_backfill_plan_counts_the_rows_without_vectors(dsn: str, conn: Conn, priced: str) -> None:
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (priced,))
    with db.connect(dsn) as c:
        found = plan.make(c, "docs")
    assert found.rows == 300
    assert found.tokens_per_row == 100 and found.tokens == 30_000
    # 3 requests by inputs (100 each), 6 by tokens (5000 each): the larger
    assert found.requests == 6
    assert found.cost == pytest.approx(30_000 * 0.02 / 1e6)
    conn.execute("ANALYZE docs")
    with db.connect(dsn) as c:
        analyzed = plan.make(c, "docs")
    assert analyzed.tokens_from == "from the column's statistics"
    assert analyzed.tokens == pytest.approx(30_000, rel=0.02)


def test_a_model_change_plans_every_row_and_a_table_not_watched_yet(
    dsn: str, conn: Conn, priced: str, minilm: str
) -> None:
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, backfill => false)", (minilm,)
    )
    conn.execute("UPDATE docs SET embedding = array_fill(0.1, ARRAY[384])::halfvec WHERE id <= 100")
    with db.connect(dsn) as c:
        assert plan.make(c, "docs").rows == 200  # local: no requests, no cost
        assert plan.make(c, "docs").requests is None
        change = plan.make(c, "docs", model=priced)
    assert change.rows == 300 and change.cost == pytest.approx(30_000 * 0.02 / 1e6)
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, txt text)")
    conn.execute("INSERT INTO notes SELECT g, 'abc' FROM generate_series(1, 10) g")
    with db.connect(dsn) as c:
        new = plan.make(c, "notes", content="txt", model=priced)
        assert new.rows == 10 and new.tokens == 10
        with pytest.raises(exceptions.ConfigError, match="--content COLUMN --model M"):
            plan.make(c, "notes")


def test_plan_on_the_command_line(dsn: str, conn: Conn, priced: str) -> None:
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE AS 'SELECT d.body'"
    )
    conn.execute("SELECT embeddings.watch('docs', 'doc_text', model => %s)", (priced,))
    env = {"DATABASE_URL": dsn}
    unknown = run_cli("plan", "docs", env=env)
    assert unknown.returncode == 0, unknown.stderr
    assert "content function (pass --tokens-per-row)" in unknown.stdout
    given = run_cli("plan", "docs", "--tokens-per-row", "50", "--json", env=env)
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout) | {"tokens_from": None} == {
        "table": "docs",
        "model": "te3-small",
        "provider": "openai",
        "rows": 300,
        "tokens_per_row": 50.0,
        "tokens_from": None,
        "tokens": 15_000,
        "requests": 3,
        "price_per_million_tokens": 0.02,
        "cost": 0.0003,
    }
