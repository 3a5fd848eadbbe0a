"""The retrievers of the retrieval-quality bench (bench/quality/retrievers.py) on a real
Postgres with pgvector, over a handful of passages whose right rankings are known: the
baseline a hybrid search is measured against must itself be right."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import psycopg

from bench.quality.evaluate import create_table, default_retrievers
from bench.quality.retrievers import (
    BM25,
    FullText,
    Fusion,
    RankFusion,
    SqlFunction,
    Table,
    Vector,
    rrf,
)

Conn = psycopg.Connection[Any]
TABLE = Table("quality_test")

PASSAGES = [
    "urllib.request.proxy_bypass(host)\n\nTest if proxies should not be used for a host.",
    "shutil.rmtree(path)\n\nRecursively delete a directory tree.",
    "shutil.copytree(src, dst)\n\nRecursively copy a directory tree.",
    "os.removedirs(name)\n\nRemove empty directories, then their empty parents.",
    "io.BufferedWriter\n\nA buffer for a writeable sequential stream.",
]
# Unit vectors at known angles to the query vector (1, 0, 0): cosine 1, 0.8, 0.6, 0, -1.
VECTORS = np.array(
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.6, 0.0, 0.8], [-1.0, 0.0, 0.0]],
    dtype=np.float32,
)
QUERY = np.array([1.0, 0.0, 0.0], dtype=np.float32)


def _load(conn: Conn) -> None:
    rows = [(f"p{i}", text, v) for i, (text, v) in enumerate(zip(PASSAGES, VECTORS, strict=True))]
    create_table(conn, TABLE, 3, rows)


def test_full_text_every_term_and_any_term(conn: Conn) -> None:
    _load(conn)
    every, any_term = FullText("all"), FullText("any")
    assert every.search(conn, TABLE, "recursively delete", QUERY, 10) == [1]
    # Either word: rmtree holds both (ranked first), copytree only "recursively".
    assert any_term.search(conn, TABLE, "recursively delete", QUERY, 10) == [1, 2]
    assert every.search(conn, TABLE, "nothing matches this", QUERY, 10) == []


def test_dotted_names_hide_their_first_word_unless_split(conn: Conn) -> None:
    _load(conn)
    # The parser reads "urllib.request.proxy" as one host token: "proxy" is not a lexeme.
    assert FullText("all").search(conn, TABLE, "proxy_bypass", QUERY, 10) == []
    assert FullText("all", split_dots=True).search(conn, TABLE, "proxy_bypass", QUERY, 10) == [0]


def test_vector_search_is_exact_cosine_order(conn: Conn) -> None:
    _load(conn)
    assert Vector().search(conn, TABLE, "", QUERY, 10) == [1, 2, 3, 0, 4]
    assert Vector().search(conn, TABLE, "", QUERY, 2) == [1, 2]


def test_fusion_in_sql_is_reciprocal_rank_fusion(conn: Conn) -> None:
    _load(conn)
    text, vector = FullText("any"), Vector()
    query = "remove a directory"  # full-text: removedirs (3), then the two "directory" trees
    sides = [r.search(conn, TABLE, query, QUERY, 100) for r in (text, vector)]
    fused = Fusion(text, vector).search(conn, TABLE, query, QUERY, 10)
    assert fused == rrf(sides, rrf_k=60)
    assert set(fused) == set(sides[0]) | set(sides[1])
    weighted = Fusion(text, vector, weights=(0.0, 1.0)).search(conn, TABLE, query, QUERY, 10)
    assert weighted == sides[1]  # zero weight on full-text: the vector order alone


def test_plain_bm25_is_okapi_with_the_corpus_statistics(conn: Conn) -> None:
    """BM25 over the split tsvectors' lexemes: tf from positions, a document's length its
    words, N and the mean length of the whole table; written out here."""
    _load(conn)
    query = "recursively remove an empty directory tree"
    wanted = conn.execute(
        "SELECT tsvector_to_array(to_tsvector('english', %s))", (query,)
    ).fetchone()
    assert wanted is not None
    docs: dict[int, dict[str, int]] = {}
    for item, lexeme, tf in conn.execute(
        "SELECT id, x.lexeme, cardinality(x.positions) FROM quality_test, unnest(fts_split) x"
    ):
        docs.setdefault(item, {})[lexeme] = tf
    lengths = {item: sum(tfs.values()) for item, tfs in docs.items()}
    mean = sum(lengths.values()) / len(PASSAGES)
    scores: dict[int, float] = {}
    for lexeme in wanted[0]:
        holding = {item: tfs[lexeme] for item, tfs in docs.items() if lexeme in tfs}
        idf = math.log(1 + (len(PASSAGES) - len(holding) + 0.5) / (len(holding) + 0.5))
        for item, tf in holding.items():
            norm = 1 - 0.75 + 0.75 * lengths[item] / mean
            scores[item] = scores.get(item, 0.0) + idf * tf * 2.2 / (tf + 1.2 * norm)
    bm25 = BM25()
    bm25.prepare(conn, TABLE)
    found = bm25.search(conn, TABLE, query, QUERY, 10)
    assert found == sorted(scores, key=lambda item: (-scores[item], item))
    assert len(found) == 3 and found[0] == 3  # removedirs: "remove", "empty" twice, "directori"
    fused = RankFusion(bm25, Vector()).search(conn, TABLE, query, QUERY, 10)
    assert fused == rrf([found, Vector().search(conn, TABLE, query, QUERY, 100)])


def test_a_sql_search_function_plugs_in_by_name(conn: Conn) -> None:
    _load(conn)
    conn.execute(
        """
        CREATE FUNCTION public.test_search(source regclass, query text, query_embedding halfvec,
                                           k integer)
        RETURNS TABLE (id integer, distance double precision) LANGUAGE plpgsql AS $$
        BEGIN
          RETURN QUERY EXECUTE format(
            'SELECT id, (embedding <=> $1)::float8 FROM %s ORDER BY 2, id LIMIT $2', source)
          USING query_embedding, k;
        END $$
        """
    )
    plugged = SqlFunction("public.test_search")
    plugged.prepare(conn, TABLE)
    assert plugged.name == "public.test_search"
    assert plugged.search(conn, TABLE, "ignored", QUERY, 3) == [1, 2, 3]


def test_the_default_run_scores_the_shipped_hybrid_search() -> None:
    """`make bench` scores embeddings.hybrid_search() beside the baselines, in the same run."""
    chosen = default_retrievers()
    assert [r.name for r in chosen].count("embeddings.hybrid_search") == 1
    assert isinstance(chosen[-1], SqlFunction) and chosen[-1].setup is not None
