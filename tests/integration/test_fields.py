"""Full-text fields (sql/59_hybrid.sql): a content `title || chr(31) || body` watched with
`fts_title_weight => w` has its title's words weighted A in the tsvector, and the BM25 ranking
counts each of their places w times in the term frequency (the rest of BM25 as
tests/integration/test_bm25.py writes it out)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.test_bm25 import K1, B, lexemes, ranked, reltuples
from tests.integration.test_search import DIMS, MODEL
from tests.support.stores import STORES
from worker.process.runner import Worker
from worker.retrieval.targets import find_target

Conn = psycopg.Connection[Any]

# (title, body): the question's words are in the titles of 1 and 2 and the bodies of 3 and 4.
DOCUMENTS = [
    ("Statins and breast cancer", "A cohort followed for ten years; outcomes by drug and dose."),
    (
        "Breast cancer screening",
        "Mammography intervals, false positives and the harms of overdiagnosis.",
    ),
    (
        "Cohort outcomes",
        "Statins lowered breast cancer risk in one cohort, statins raised it in another.",
    ),
    ("Diet and disease", "Fibre, fat and breast cancer: what statins add to a low-fat diet."),
    ("Exercise", "Walking an hour a day lowered the risk of heart disease."),
]
QUESTION = "Do statins cause breast cancer?"


def watch(conn: Conn, **options: Any) -> None:
    conn.execute("CREATE TABLE papers (id int PRIMARY KEY, title text, body text)")
    conn.execute(
        "CREATE FUNCTION paper_content(p papers) RETURNS text LANGUAGE sql IMMUTABLE"
        " AS $$ SELECT p.title || chr(31) || p.body $$"
    )
    for i, (title, body) in enumerate(DOCUMENTS, start=1):
        conn.execute("INSERT INTO papers VALUES (%s, %s, %s)", (i, title, body))
    named = "".join(f", {name} => %({name})s" for name in options)
    conn.execute(
        f"SELECT embeddings.watch('papers', 'paper_content', model => %(model)s{named})",
        {"model": MODEL, **options},
    )


def embed(conn: Conn) -> None:
    """Vectors for every row; then full-text search fills the tsvectors as the worker's store
    function writes them (embeddings_internal.fts_sql())."""
    conn.execute("UPDATE papers SET embedding = array_fill(0.1::real, ARRAY[%s])", (DIMS,))


def reference(conn: Conn, weight: float) -> dict[int, float]:
    """BM25 with each of a query lexeme's places in the title counted `weight` times."""
    wanted = lexemes(conn, QUESTION)
    docs: dict[int, tuple[int, dict[str, float]]] = {}
    for key, length, lexeme, tf, title_tf in conn.execute(
        "SELECT p.id, length(p.embedding_fts), x.lexeme, cardinality(x.positions),"
        " coalesce((SELECT cardinality(y.positions) FROM unnest(to_tsvector('english', p.title)) y"
        "           WHERE y.lexeme = x.lexeme), 0)"
        " FROM papers p, unnest(p.embedding_fts) x"
    ):
        docs.setdefault(key, (length, {}))[1][lexeme] = tf + (weight - 1) * title_tf
    candidates = {
        key: (length, {w: tf for w, tf in tfs.items() if w in wanted})
        for key, (length, tfs) in docs.items()
        if wanted & tfs.keys()
    }
    n = max(reltuples(conn, "papers"), len(candidates))
    mean = sum(length for length, _ in candidates.values()) / len(candidates)
    df: dict[str, int] = {}
    for _, tfs in candidates.values():
        for w in tfs:
            df[w] = df.get(w, 0) + 1
    idf = {w: math.log(1 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}
    return {
        key: sum(
            idf[w] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / mean))
            for w, tf in tfs.items()
        )
        for key, (length, tfs) in candidates.items()
    }


def bm25_ranking(conn: Conn) -> dict[int, float]:
    target = find_target(conn, "papers")
    row = conn.execute(
        f"SELECT embeddings.embeddings_{target.id}_bm25_ranking(%s, NULL, 100)", (QUESTION,)
    ).fetchone()
    assert row is not None
    return {r["key"]: r["text_rank"] for r in row[0]}


def test_the_title_counts_its_weight_times_in_bm25(conn: Conn) -> None:
    watch(conn)
    embed(conn)
    conn.execute("SELECT embeddings.enable_fts('papers', 'english', title_weight => 3)")
    conn.execute("ANALYZE papers")
    # The tsvector: the title's words weighted A, the body's after them.
    assert conn.execute(
        "SELECT bool_and(embedding_fts = setweight(to_tsvector('english', title), 'A')"
        " || to_tsvector('english', body)) FROM papers"
    ).fetchone() == (True,)
    found, expected = bm25_ranking(conn), reference(conn, 3)
    assert list(found) == ranked(expected)
    for key, score in expected.items():
        assert found[key] == pytest.approx(score), key
    # The title's weight puts the document whose title holds the question's words first,
    # where one field put the body that repeats them first.
    assert next(iter(found)) == 1
    assert ranked(reference(conn, 1))[0] == 3


def test_watch_takes_the_title_weight_and_weight_one_ranks_as_one_field(conn: Conn) -> None:
    watch(conn, fts="english", fts_title_weight=1)
    embed(conn)
    conn.execute("SELECT embeddings.enable_fts('papers', 'english', title_weight => 1)")
    conn.execute("ANALYZE papers")
    one_field = reference(conn, 1)
    found = bm25_ranking(conn)
    assert list(found) == ranked(one_field)
    # Watched again with another weight: the generated ranking follows.
    conn.execute(
        "SELECT embeddings.watch('papers', 'paper_content', model => %s, fts_title_weight => 3)",
        (MODEL,),
    )
    assert conn.execute("SELECT fts_title_weight FROM embeddings.targets").fetchone() == (3,)
    assert list(bm25_ranking(conn)) == ranked(reference(conn, 3))


def test_hybrid_search_fuses_the_fielded_ranking(conn: Conn) -> None:
    watch(conn, fts="english", fts_title_weight=3)
    embed(conn)
    conn.execute("SELECT embeddings.enable_fts('papers', 'english', title_weight => 3)")
    conn.execute("ANALYZE papers")
    rows = conn.execute(
        "SELECT key::int, text_rank FROM embeddings.hybrid_search('papers', %s,"
        " array_fill(0.1::real, ARRAY[%s])::halfvec, 5) WHERE text_rank IS NOT NULL"
        " ORDER BY text_rank",
        (QUESTION, DIMS),
    ).fetchall()
    assert [key for key, _ in rows] == ranked(reference(conn, 3))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fts_title_weight": 2}, "pass fts => too"),
        ({"fts": "english", "fts_title_weight": 0.5}, "title_weight is at least 1"),
        ({"fts": "english", "fts_title_weight": 2, "chunk_tokens": 50}, "a chunk holds no title"),
    ],
)
def test_watch_refuses_a_title_weight_it_cannot_use(
    conn: Conn, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(psycopg.Error, match=message):
        watch(conn, **options)


@pytest.mark.parametrize("store", STORES)
def test_the_worker_embeds_title_and_body_and_keeps_the_fields_apart(
    conn: Conn,
    minilm: str,
    run_once: Callable[..., Worker],
    embedded_texts: list[str],
    store: str,
) -> None:
    """The model reads the separator as a space; the tsvector the worker writes (in the table
    or in the side table) weighs the title's words A."""
    side = {"store": "side"} if store == "side" else {}
    watch(conn, fts="english", fts_title_weight=2, **side)
    run_once()
    assert sorted(embedded_texts) == sorted(f"{title} {body}" for title, body in DOCUMENTS)
    tsvectors = "papers" if store == "row" else "papers_embeddings"
    assert conn.execute(
        f"SELECT bool_and(f.embedding_fts = setweight(to_tsvector('english', p.title), 'A')"
        f" || to_tsvector('english', p.body)) FROM papers p JOIN {tsvectors} f USING (id)"
    ).fetchone() == (True,)
    # An update is written the same way.
    conn.execute("UPDATE papers SET title = 'Statins' WHERE id = 5")
    run_once()
    assert conn.execute(f"SELECT embedding_fts::text FROM {tsvectors} WHERE id = 5").fetchone() == (
        "'day':6 'diseas':12 'heart':11 'hour':4 'lower':7 'risk':9 'statin':1A 'walk':2",
    )
