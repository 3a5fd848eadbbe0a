"""The BM25 ranking tells which documents hold every word of the question (its rows' `every`,
sql/59_bm25.sql) wherever that is exact, and hybrid search then weighs those up without a
second search: the every-word ranking runs only where the BM25 ranking cannot tell (a negated
word, a document holding every word beyond the depth asked for, a chunked target)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.test_bm25 import QUERY, Items
from tests.integration.test_search import text
from tests.support.stores import ALL_STORES

Conn = psycopg.Connection[Any]
ABSENT = "absent"


@pytest.fixture(params=ALL_STORES)
def items(request: pytest.FixtureRequest, conn: Conn) -> Items:
    items = Items(conn, request.param)
    items.analyze()
    return items


def every(items: Items, question: str, depth: int = 100) -> dict[Any, Any]:
    """Each row of the BM25 ranking's answer: its key -> its `every` (ABSENT when missing)."""
    row = items.conn.execute(
        f"SELECT embeddings.embeddings_{items.target.id}_bm25_ranking(%s, NULL, %s)",
        (question, depth),
    ).fetchone()
    assert row is not None and row[0]
    return {r["key"]: r.get("every", ABSENT) for r in row[0]}


@pytest.mark.parametrize("sampled", [False, True], ids=["small", "sampled"])
@pytest.mark.parametrize("question", ["directory tree", "file", "parse a folder of json", QUERY])
def test_the_ranking_marks_the_documents_holding_every_word(
    items: Items, question: str, sampled: bool
) -> None:
    """Those of at most 10 documents holding every lexeme of the question: the reference's
    (written out in test_bm25.py), with the table's statement and with the sampled one (as from
    embeddings.bm25_sample_rows rows); a chunked target's rows leave it to the every-word
    ranking."""
    if sampled:
        items.conn.execute("SET embeddings.bm25_sample_rows = 0")
    found = every(items, question)
    if items.store == "chunks":
        assert set(found.values()) == {ABSENT}
        return
    holding = items.reference(question).every
    assert len(holding) <= 10
    assert found == {key: key in holding for key in found}
    assert holding <= set(found)


@pytest.mark.parametrize(
    ("question", "depth"),
    [
        ("directory -tree", 100),  # a negated word: documents holding no word of it match
        ("file", 2),  # six documents hold it, two are returned
        # An OR: seven documents match the every-word query, two are returned; `file`, left
        # out of the candidates' query at depth 2 (six of ten hold it), is ORed back in.
        ("tree OR file", 2),
    ],
)
@pytest.mark.parametrize(
    "setting",
    ["embeddings.bm25_prune_rows", "embeddings.bm25_sample_rows"],
    ids=["counted", "sampled"],
)
def test_where_it_cannot_tell_every_row_says_so(
    items: Items, question: str, depth: int, setting: str
) -> None:
    if items.store == "chunks":
        pytest.skip("a chunked target's rows never tell")
    items.conn.execute(f"SET {setting} = 0")  # common words left out, too
    assert set(every(items, question, depth).values()) == {None}


@pytest.mark.parametrize(
    ("question", "asked"),
    [("directory tree", False), ("file", False), ("directory -tree", True)],
)
def test_hybrid_search_asks_the_every_word_ranking_only_where_bm25_cannot_tell(
    items: Items, question: str, asked: bool
) -> None:
    """Counted by Postgres (track_functions) within one transaction: the every-word ranking
    runs for a chunked target and for a question the BM25 ranking could not tell for."""
    conn = items.conn
    with conn.transaction():
        conn.execute("SET LOCAL track_functions = 'all'")
        conn.execute(
            "SELECT * FROM embeddings.hybrid_search('items', %s, %s::halfvec, 5)",
            (question, text(items.query)),
        ).fetchall()
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
            " WHERE schemaname = 'embeddings' AND funcname = %s",
            (f"embeddings_{items.target.id}_text_ranking",),
        ).fetchone()
    assert row is not None
    assert row[0] == (1 if asked or items.store == "chunks" else 0)
