"""Hybrid search (sql/59_hybrid.sql): the fusion equals reciprocal rank fusion computed here
from the two rankings; the tsvector is kept by the worker's store function (plain targets) or
generated (chunk tables); filters apply to both rankings."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest

from bench.quality.retrievers import rrf
from tests.integration.test_search import DIMS, MODEL, Vec, text, toward, unit
from tests.support.fetch import fetch_value
from tests.support.stores import STORES, WATCH_ARGS
from worker import exceptions
from worker.models.loaded import LoadedModels
from worker.process.runner import Worker
from worker.retrieval import errors, rankings, search
from worker.retrieval.fusion import Fusion
from worker.retrieval.request import SearchRequest
from worker.retrieval.targets import find_target

Conn = psycopg.Connection[Any]
RRF_WEIGHTS = (1.0, 2.0)  # hybrid_search(fusion => 'rrf')'s defaults

BODIES = [
    "The urllib.request.urlopen function opens a URL.",
    "Open a network address and read the page.",
    "ValueError: math domain error raised by sqrt of a negative number",
    "Square roots of negative numbers are not real.",
    "shutil.rmtree deletes a directory tree.",
    "Remove a folder together with everything inside it.",
    "The quick brown fox jumps over the lazy dog.",
    "Parsing JSON text into dictionaries and lists.",
]


def text_ranking(conn: Conn, table: str, column: str, query: str) -> list[Any]:
    """The full-text ranking as the docs describe it, written out here."""
    rows = conn.execute(
        f"SELECT id FROM {table}, websearch_to_tsquery('english', regexp_replace("
        r" regexp_replace(regexp_replace(%s, '(\w)\.(?=\w)', '\1 ', 'g'),"
        r" '\m(or|Or|oR)\M', '\1_', 'g'), '-(?=[-\s!&|()<]|$)', ' ', 'g')) q"
        f" WHERE {column} @@ q ORDER BY ts_rank_cd({column}, q) DESC, id",
        (query,),
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def items(conn: Conn) -> Vec:
    """Eight rows with vectors at known distances from the query (row i+1 at 0.1 + 0.08 i)."""
    query = unit(np.random.default_rng(5).standard_normal(DIMS))
    rng = np.random.default_rng(6)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, tenant int, body text)")
    for i, body in enumerate(BODIES, start=1):
        conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (i, i % 2, body))
    conn.execute("SELECT embeddings.watch('items', 'body', model => %s)", (MODEL,))
    for i in range(1, len(BODIES) + 1):
        v = toward(query, rng, 0.1 + 0.08 * (i - 1))[0]
        conn.execute("UPDATE items SET embedding = %s WHERE id = %s", (text(v), i))
    conn.execute("SELECT embeddings.enable_fts('items', 'english')")
    return query


@pytest.mark.parametrize(
    ("words", "weights", "rrf_k", "filter"),
    [
        ("urlopen", (1.0, 1.0), 60, None),
        ("math domain error", (1.0, 1.0), 60, None),
        ("directory OR folder OR negative", (0.5, 2.0), 10, None),
        ("directory OR folder OR negative OR url", (1.0, 1.0), 60, {"tenant": 1}),
    ],
)
def test_hybrid_equals_a_reference_fusion(
    conn: Conn,
    items: Vec,
    words: str,
    weights: tuple[float, float],
    rrf_k: int,
    filter: dict[str, Any] | None,
) -> None:
    allowed = [i for i in range(1, 9) if filter is None or i % 2 == filter["tenant"]]
    by_vector = allowed  # row i is the i-th nearest by construction
    by_text = [i for i in text_ranking(conn, "items", "embedding_fts", words) if i in allowed]
    assert by_text, words
    expected = rrf([by_vector, by_text], rrf_k=rrf_k, weights=weights)[:5]
    rows = conn.execute(
        "SELECT key, score, vector_rank, text_rank FROM embeddings.hybrid_search('items', %s,"
        " %s::halfvec, 5, %s::jsonb, rrf_k => %s, vector_weight => %s, text_weight => %s,"
        " fusion => 'rrf', text_match => 'all')",
        (
            words,
            text(items),
            None if filter is None else psycopg.types.json.Jsonb(filter),
            rrf_k,
            *weights,
        ),
    ).fetchall()
    assert [r[0] for r in rows] == expected
    for key, score, vector_rank, text_rank in rows:
        assert vector_rank == by_vector.index(key) + 1
        assert text_rank == (by_text.index(key) + 1 if key in by_text else None)
        parts = [weights[0] / (rrf_k + vector_rank)]
        if text_rank is not None:
            parts.append(weights[1] / (rrf_k + text_rank))
        assert score == pytest.approx(sum(parts))


def test_equal_scores_go_by_the_best_single_rank_not_the_key(conn: Conn) -> None:
    """rrf_k 0 and equal weights: X, first by meaning only (1/1), and Y, second in both
    rankings (1/2 + 1/2), score alike; X's best rank is 1, Y's 2, so X comes first, though Y's key sorts first."""
    query = unit(np.random.default_rng(11).standard_normal(DIMS))
    rng = np.random.default_rng(12)
    conn.execute("CREATE TABLE ties (id int PRIMARY KEY, body text)")
    rows = {9: ("bananas ripen in the sun", 0.1), 2: ("a red apple fell", 0.2)}
    rows[5] = ("red apple, red apple, red apple pie", 0.3)  # Z: first by text, third by meaning
    for key, (body, _) in rows.items():
        conn.execute("INSERT INTO ties VALUES (%s, %s)", (key, body))
    conn.execute("SELECT embeddings.watch('ties', 'body', model => %s)", (MODEL,))
    for key, (_, distance) in rows.items():
        v = toward(query, rng, distance)[0]
        conn.execute("UPDATE ties SET embedding = %s WHERE id = %s", (text(v), key))
    conn.execute("SELECT embeddings.enable_fts('ties', 'english')")
    by_vector = [9, 2, 5]
    by_text = text_ranking(conn, "ties", "embedding_fts", "red apple")
    assert by_text == [5, 2]

    found = conn.execute(
        "SELECT key, score FROM embeddings.hybrid_search('ties', 'red apple', %s::halfvec, 3,"
        " rrf_k => 0, text_weight => 1, fusion => 'rrf', text_match => 'all')",
        (text(query),),
    ).fetchall()
    assert [key for key, _ in found] == rrf([by_vector, by_text], rrf_k=0) == [5, 9, 2]
    assert found[1][1] == found[2][1] == 1.0  # the tie


def test_any_word_ranks_the_rows_with_any_word_of_the_question(conn: Conn, items: Vec) -> None:
    """Words spread over several rows: every-word matching finds no row, so hybrid search
    orders as vector search does; any-word matching ranks the rows holding any of them (by
    BM25: tests/integration/test_bm25.py checks its scores)."""
    question = 'how do I "delete" a folder -and open a url with urlopen'
    target = find_target(conn, "items")
    all_words = rankings.run(
        conn, rankings.hybrid_ranking(target, question, items, 8, fusion=Fusion(text_match="all"))
    )
    assert all(r["text_rank"] is None for r in all_words)

    any_words = rankings.run(
        conn, rankings.hybrid_ranking(target, question, items, 8, fusion=Fusion())
    )
    holding = text_ranking(
        conn, "items", "embedding_fts", "delete OR folder OR open OR url OR urlopen"
    )
    by_text = [r["key"] for r in any_words if r["text_rank"]]
    assert len(by_text) >= 3 and set(by_text) == set(holding)
    assert sorted(r["text_rank"] for r in any_words if r["text_rank"]) == list(
        range(1, len(by_text) + 1)
    )
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="text_match is 'all'"):
        conn.execute(
            "SELECT * FROM embeddings.hybrid_search('items', 'x', %s::halfvec, text_match => 'some')",
            (text(items),),
        )
    with pytest.raises(ValueError, match='"text_match" must be "all" or "any"'):
        Fusion.parse({"text_match": "some"})


def test_tuning_from_outside_sql_reaches_the_fusion(conn: Conn, items: Vec) -> None:
    """rrf_k, the weights and depth as `embed-worker search` and POST /search pass them
    (worker/retrieval/fusion.py): the same ranking as the reference fusion with them, each
    ranking cut at depth (at least k)."""
    words = "directory OR folder OR negative OR url"
    fusion = Fusion(
        rrf_k=5, vector_weight=0.25, text_weight=3, depth=4, text_match="all", fusion="rrf"
    )
    by_vector = [1, 2, 3, 4]  # row i is the i-th nearest; cut at depth 4
    by_text = text_ranking(conn, "items", "embedding_fts", words)[:4]
    expected = rrf([by_vector, by_text], rrf_k=5, weights=(0.25, 3))[:3]
    found = rankings.run(
        conn, rankings.hybrid_ranking(find_target(conn, "items"), words, items, 3, fusion=fusion)
    )
    assert [r["key"] for r in found] == expected
    for r in found:
        parts = [0.25 / (5 + r["vector_rank"])] if r["vector_rank"] else []
        parts += [3 / (5 + r["text_rank"])] if r["text_rank"] else []
        assert r["score"] == pytest.approx(sum(parts))
        assert (r["vector_rank"] or 0) <= 4 and (r["text_rank"] or 0) <= 4
    with pytest.raises(errors.InvalidSearch, match=re.escape(f"text_weight {RANGE}")):
        rankings.run(
            conn,
            rankings.hybrid_ranking(
                find_target(conn, "items"), words, items, 4, fusion=Fusion(text_weight=-1)
            ),
        )


def test_tuning_a_search_that_is_not_hybrid_is_refused(
    conn: Conn, items: Vec, embedders: LoadedModels, minilm: str
) -> None:
    """Mode "auto" on a table without full-text search is a vector search: tuning given for
    the fusion would be ignored, so the search is refused instead (a 400 over HTTP)."""
    conn.execute("SELECT embeddings.disable_fts('items')")
    target = find_target(conn, "items")
    with pytest.raises(errors.InvalidSearch, match="has no full-text search: rrf_k"):
        search.ranked(conn, embedders.get, target, "urlopen", 3, fusion=Fusion(depth=5))
    assert len(search.ranked(conn, embedders.get, target, "urlopen", 3)) == 3


def test_hybrid_search_under_row_level_security_sees_only_the_policy_s_rows(
    conn: Conn, items: Vec
) -> None:
    """A role whose policy shows it tenant 1's rows (the odd ones): both rankings, and so the
    fusion, hold only those; rows that match the words but the policy hides never appear."""
    conn.execute("CREATE ROLE hybrid_reader")
    conn.execute("GRANT SELECT ON items TO hybrid_reader")
    conn.execute("ALTER TABLE items ENABLE ROW LEVEL SECURITY")
    conn.execute(
        "CREATE POLICY tenant ON items FOR SELECT TO hybrid_reader"
        " USING (tenant = current_setting('app.tenant')::int)"
    )
    words = "directory OR folder OR negative OR url"
    by_text = text_ranking(conn, "items", "embedding_fts", words)
    assert {4, 6} & set(by_text), "the words match rows the policy hides"
    visible = [i for i in range(1, 9) if i % 2 == 1]
    expected = rrf([visible, [i for i in by_text if i in visible]], weights=RRF_WEIGHTS)[:5]
    conn.execute("SET app.tenant = '1'")
    conn.execute("SET ROLE hybrid_reader")
    rows = conn.execute(
        "SELECT key, vector_rank, text_rank FROM embeddings.hybrid_search('items', %s,"
        " %s::halfvec, 5, fusion => 'rrf', text_match => 'all')",
        (words, text(items)),
    ).fetchall()
    default = conn.execute(
        "SELECT key FROM embeddings.hybrid_search('items', %s, %s::halfvec, 8)",
        (words, text(items)),
    ).fetchall()
    conn.execute("RESET ROLE")
    assert sorted(r[0] for r in default) == visible
    assert [r[0] for r in rows] == expected
    assert all(r[0] % 2 == 1 for r in rows)


def test_dotted_names_match_their_last_part(conn: Conn, items: Vec) -> None:
    target = find_target(conn, "items")
    found = rankings.run(conn, rankings.hybrid_ranking(target, "urlopen", items, 3))
    assert found[0]["key"] == 1 and found[0]["text_rank"] == 1


OR_BODIES = [
    "Salt or pepper, to taste.",
    "Salt and pepper.",
    "Pepper alone.",
    "The method must be GET or POST.",
    "A POST request.",
]


def test_only_an_upper_case_or_is_the_operator(conn: Conn) -> None:
    """websearch_to_tsquery() reads "or" in any case as OR: "GET or POST" matched every row
    holding POST. Here a lower-case "or" is a word (a stop word in english), and OR the
    operator; within a quoted phrase the word keeps its place."""
    query = unit(np.random.default_rng(7).standard_normal(DIMS))
    rng = np.random.default_rng(8)
    conn.execute("CREATE TABLE spices (id int PRIMARY KEY, body text)")
    for i, body in enumerate(OR_BODIES, start=1):
        conn.execute("INSERT INTO spices VALUES (%s, %s)", (i, body))
    conn.execute("SELECT embeddings.watch('spices', 'body', model => %s)", (MODEL,))
    for i in range(1, len(OR_BODIES) + 1):
        v = toward(query, rng, 0.1 + 0.08 * (i - 1))[0]
        conn.execute("UPDATE spices SET embedding = %s WHERE id = %s", (text(v), i))
    conn.execute("SELECT embeddings.enable_fts('spices', 'english')")
    target = find_target(conn, "spices")

    def matched(question: str) -> set[int]:
        found = rankings.run(
            conn,
            rankings.hybrid_ranking(
                target, question, query, len(OR_BODIES), fusion=Fusion(text_match="all")
            ),
        )
        return {r["key"] for r in found if r["text_rank"] is not None}

    assert matched("method must be GET or POST") == {4}  # was {4, 5}: "... GET" | "post"
    assert matched("method must be GET Or POST") == {4}
    assert matched("salt or pepper") == {1, 2}  # every word: "salt" and "pepper"
    assert matched("salt OR pepper") == {1, 2, 3}  # the operator
    assert matched('"salt or pepper"') == {1, 2}  # a phrase: salt, a word, pepper
    assert matched('"salt pepper"') == set()
    assert matched("color or flavor") == set()  # words holding "or" are left alone
    assert text_ranking(conn, "spices", "embedding_fts", "GET or POST") == [4]


# Pieces of questions as they are pasted: a docstring's underlined heading, list dashes,
# operators of other query languages, quotes, escapes.
PUNCTUATION = [
    "-",
    "- ",
    "--",
    "-!",
    "-(",
    "-&",
    "-|",
    "-\n",
    '"',
    "'",
    "!",
    "&",
    "|",
    "(",
    ")",
    ":",
    "*",
    "<->",
    "<",
    ".",
    ",",
    "_",
    "\\",
    "OR ",
    "or ",
    " ",
    "\n",
    "\t",
    "word",
    "é",
    "os.path",
    "-x",
    "\u00a0",
]


def _punctuated(rng: random.Random) -> str:
    return "".join(rng.choice(PUNCTUATION) for _ in range(rng.randint(1, 300)))


@pytest.mark.parametrize("text_match", ["any", "all"])
def test_questions_of_any_punctuation_never_fail_a_search(
    conn: Conn, items: Vec, text_match: str
) -> None:
    """websearch_to_tsquery() reads each "-" in place of a word as a NOT waiting for its word:
    32 of them in a row ("----------" under a docstring's heading) failed every hybrid search
    of text_match 'all' with "tsquery stack too small"."""
    rng = random.Random(3)
    asked = [
        "-" * 80,
        "Parameters\n----------\nx : int\n    the value",
        "- " * 40 + "tree",
        "-!" * 40,
        "-(" * 40 + "tree",
        " -- " * 33 + "directory",
        *(_punctuated(rng) for _ in range(300)),
    ]
    for question in asked:
        conn.execute(
            "SELECT * FROM embeddings.hybrid_search('items', %s, %s::halfvec, 3, text_match => %s)",
            (question, text(items), text_match),
        ).fetchall()
    target = find_target(conn, "items")

    def matched(question: str) -> set[int]:
        found = rankings.run(
            conn,
            rankings.hybrid_ranking(target, question, items, 8, fusion=Fusion(text_match="all")),
        )
        return {r["key"] for r in found if r["text_rank"] is not None}

    assert matched("directory tree") == {5}
    assert matched("directory -tree") == set()  # a "-" touching a word still excludes it
    assert matched("directory - tree") == {5}  # one before a space is a space
    assert matched("directory ---------- tree") == {5}


def test_a_hybrid_search_without_a_question_is_an_error(conn: Conn, items: Vec) -> None:
    """Both NULL: an error, not the table's first rows with a score of 0. The vector ranking
    left out (NULL), the text ranking alone: no row there but for the text, whatever the fusion
    (the vector ranking of NULL was every row in no order, which RRF scored)."""
    with pytest.raises(
        psycopg.errors.NullValueNotAllowed, match="query and query_embedding must not both be NULL"
    ):
        conn.execute("SELECT * FROM embeddings.hybrid_search('items', NULL, NULL, k => 3)")
    holding = text_ranking(conn, "items", "embedding_fts", "directory OR folder")
    for fusion in ("convex", "rrf"):
        found = conn.execute(
            "SELECT key, vector_rank, text_rank FROM embeddings.hybrid_search('items',"
            " 'directory OR folder', NULL, k => 5, text_match => 'all', fusion => %s)",
            (fusion,),
        ).fetchall()
        assert [r[0] for r in found] == holding
        assert {r[1] for r in found} == {None}
        # The text ranking left out instead: the vector ranking alone (row i is the i-th nearest).
        found = conn.execute(
            "SELECT key, text_rank FROM embeddings.hybrid_search('items', NULL, %s::halfvec,"
            " k => 3, fusion => %s)",
            (text(items), fusion),
        ).fetchall()
        assert found == [(1, None), (2, None), (3, None)]


RANGE = "must be a number of at least 0: 0 or from 1e-06 to 1e+06"
RRF_ONLY = "is for fusion 'rrf': the convex one has no rank constant"


def test_rrf_k_is_taken_with_fusion_rrf_only(conn: Conn, items: Vec) -> None:
    """With rrf it ranks; with the convex fusion it would be ignored, so it is refused, but
    for its default (a 0.3.0 worker passes rrf_k => 60 in every search); CLI and HTTP refuse
    it whenever it is given without "fusion": "rrf"."""
    search_sql = (
        "SELECT key FROM embeddings.hybrid_search('items', 'folder', %s::halfvec, k => 3,"
        " rrf_k => %s{})"
    )
    found = conn.execute(search_sql.format(", fusion => 'rrf'"), (text(items), 10)).fetchall()
    assert len(found) == 3
    assert conn.execute(search_sql.format(""), (text(items), 60)).fetchall()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=re.escape(RRF_ONLY)):
        conn.execute(search_sql.format(", fusion => 'convex'"), (text(items), 10))
    asked = {"table": "items", "query": "folder", "rrf_k": 60}
    with pytest.raises(ValueError, match=re.escape(f"rrf_k {RRF_ONLY}")):
        SearchRequest.parse(asked)
    fusion = SearchRequest.parse({**asked, "fusion": "rrf"}).fusion
    assert fusion is not None and fusion.rank_constant == 60


@pytest.mark.parametrize(
    ("tuning", "message", "given"),
    [
        (
            {"vector_weight": 0.0, "text_weight": 0.0},
            "vector_weight and text_weight cannot both be 0",
            None,
        ),
        ({"rrf_k": 1e7}, f"rrf_k {RANGE}", "rrf_k is 10000000."),
        ({"text_weight": 5e-7}, f"text_weight {RANGE}", "text_weight is 5e-07."),
        ({"vector_weight": -1.0}, f"vector_weight {RANGE}", "vector_weight is -1."),
        ({"vector_weight": float("nan")}, f"vector_weight {RANGE}", "vector_weight is NaN."),
        ({"text_weight": float("inf")}, f"text_weight {RANGE}", "text_weight is Infinity."),
        ({"rrf_k": float("-inf")}, f"rrf_k {RANGE}", "rrf_k is -Infinity."),
        # Ignored by the default convex fusion (0.3.0 took it and ignored it).
        ({"rrf_k": 10.0}, f"rrf_k {RRF_ONLY}", "rrf_k is 10."),
    ],
)
def test_bad_tuning_is_refused_alike_from_sql_and_from_outside(
    conn: Conn, items: Vec, tuning: dict[str, float], message: str, given: str | None
) -> None:
    """hybrid_search() took both weights 0 and any weight up to 1.7e308, which only the CLI
    and HTTP refused (worker/retrieval/fusion.py), in words of their own; NaN and infinities
    it refused without saying which argument. Now SQL refuses what they refuse, and they say
    what SQL says (but for the function's name)."""
    named = ", ".join(f"{name} => %({name})s::double precision" for name in tuning)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as in_sql:
        conn.execute(
            "SELECT * FROM embeddings.hybrid_search('items', 'folder', %(q)s::halfvec, k => 3,"
            f" {named})",
            {"q": text(items), **tuning},
        )
    assert in_sql.value.diag.message_primary == f"embeddings.hybrid_search: {message}"
    assert in_sql.value.diag.message_detail == given
    # POST /search and `embed-worker search` (which names the flags) parse the request so.
    with pytest.raises(ValueError) as outside:
        SearchRequest.parse({"table": "items", "query": "folder", **tuning})
    assert str(outside.value) == message


def test_enable_fts_without_a_configuration_is_an_error_naming_it(conn: Conn, items: Vec) -> None:
    """Not a syntax error quoting the whole generated fill; the full-text search stays."""
    with pytest.raises(
        psycopg.errors.NullValueNotAllowed, match=r"enable_fts\(\): config must not be NULL"
    ):
        conn.execute("SELECT embeddings.enable_fts('items', NULL)")
    assert conn.execute("SELECT fts_config::text FROM embeddings.targets").fetchone() == (
        "english",
    )


@pytest.mark.parametrize("text_match", ["any", "all"])
def test_the_full_text_side_reads_the_question_s_first_64_words(
    conn: Conn, items: Vec, text_match: str
) -> None:
    """A question of 20,000 words is answered (before: "stack depth limit exceeded", the
    every-word query a tree with an AND per word), its full-text side reading its first 64
    words (docs/sql.md), a word repeated counted once: "directory tree" 8,000 times ranks as
    "directory tree" (before: a backend busy half a minute on a larger table)."""
    target = find_target(conn, "items")

    def matched(question: str) -> set[int]:
        found = rankings.run(
            conn,
            rankings.hybrid_ranking(
                target, question, items, 8, fusion=Fusion(text_match=text_match)
            ),
        )
        return {r["key"] for r in found if r["text_rank"] is not None}

    assert matched(" ".join(f"w{i}" for i in range(20_000))) == set()
    if text_match == "any":
        filler = " ".join(f"w{i}" for i in range(62))
        assert matched(f"urlopen {filler} tree") == {1, 5}  # words 1 and 64
        assert matched(f"urlopen {filler} x tree") == {1}
        assert matched("Directory tree DIRECTORY " * 8000 + " urlopen") == {1, 5}  # 3rd word
    else:  # words none holds are no filler here: excluded ones
        excluded = " ".join(f"-w{i}" for i in range(62))
        assert matched(f"directory tree {excluded} -tree") == {5}  # "-tree" the 65th
        assert matched(f"directory tree {excluded[:-4]} -tree") == set()  # the 64th
    assert matched("directory tree " * 8000) == {5}


def test_terms_repeated_in_websearch_syntax_are_read_once(conn: Conn, items: Vec) -> None:
    """A word repeated was read once only in a question without websearch syntax: `"a b" "a b"
    ...` made the every-word query 32 phrases in its 64 words, each scored by ts_rank_cd in
    every row (about 2 s on 2,000 rows). A term given again between the same ORs, and a run of
    terms given again between ORs, say nothing more (x AND x is x, X OR X is X)."""

    def words(question: str) -> str:
        return str(fetch_value(conn, "SELECT embeddings_internal.fulltext_words(%s)", (question,)))

    assert words('"directory tree" ' * 8000) == '"directory tree"'
    assert words('"directory tree" ' * 100 + "urlopen") == '"directory tree" urlopen'
    assert words('"Directory tree" -fox "directory TREE" -fox tree') == '"Directory tree" -fox tree'
    assert words("urlopen OR tree fox fox OR urlopen OR fox tree") == "urlopen OR tree fox"
    assert words('tree - - "fox" fox') == 'tree - - "fox" fox'  # nothing given again: as it is
    # An OR first, last or doubled is a word, not the operator: the question is left as it is.
    assert words("OR tree tree") == "OR tree tree"
    assert words("tree tree OR OR fox") == "tree tree OR OR fox"
    target = find_target(conn, "items")
    for text_match in ("all", "any"):
        fusion = Fusion(text_match=text_match)
        once, repeated = (
            rankings.run(conn, rankings.hybrid_ranking(target, q, items, 8, fusion=fusion))
            for q in ('"directory tree"', '"directory tree" ' * 32)
        )
        assert once == repeated


def test_a_question_read_once_matches_what_it_matched(conn: Conn) -> None:
    """websearch_distinct() leaves the every-word query's matches as they were, over random
    questions of words, -words, "phrases", ORs (any case) and lone "-" and quotes."""
    rnd = random.Random(7)
    vocab = ["ant", "bee", "cat", "dog"]
    conn.execute("CREATE TEMP TABLE docs (v tsvector)")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO docs VALUES (to_tsvector('simple', %s))",
            [(" ".join(rnd.choices(vocab, k=rnd.randint(0, 6))),) for _ in range(200)],
        )
    query = fetch_value(conn, "SELECT embeddings_internal.every_word_query_sql('simple', '$1')")
    conn.execute(
        f"CREATE FUNCTION pg_temp.q(text) RETURNS tsquery LANGUAGE sql AS $f$ SELECT {query} $f$"
    )

    def term() -> str:
        roll = rnd.random()
        if roll < 0.3:
            return '"' + " ".join(rnd.choices(vocab, k=rnd.randint(1, 3))) + '"'
        if roll < 0.45:
            return "-" + rnd.choice(vocab)
        if roll < 0.6:
            return "OR"
        if roll < 0.65:
            return rnd.choice(['"', "-", "or", '"' + rnd.choice(vocab)])
        return rnd.choice(vocab).upper() if rnd.random() < 0.2 else rnd.choice(vocab)

    for _ in range(500):
        question = " ".join(term() for _ in range(rnd.randint(1, 9)))
        differ = fetch_value(
            conn,
            "SELECT count(*) FROM docs WHERE (v @@ pg_temp.q(%(q)s)) IS DISTINCT FROM"
            " (v @@ pg_temp.q(embeddings_internal.websearch_distinct(%(q)s)))",
            {"q": question},
        )
        assert differ == 0, question


def test_hybrid_on_a_target_without_full_text_is_refused(conn: Conn, items: Vec) -> None:
    conn.execute("SELECT embeddings.disable_fts('items')")
    target = find_target(conn, "items")
    with pytest.raises(errors.InvalidSearch, match="no full-text search"):
        rankings.run(conn, rankings.hybrid_ranking(target, "urlopen", items, 3))
    assert not target.has_fulltext


def test_chunked_target_fuses_documents(conn: Conn) -> None:
    query = unit(np.random.default_rng(7).standard_normal(DIMS))
    rng = np.random.default_rng(8)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, 4) i")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 64)", (MODEL,)
    )
    conn.execute("SELECT embeddings.enable_fts('docs')")
    chunks = [  # (doc, seq, text, distance)
        (1, 0, "nothing to see", 0.1),
        (1, 1, "the zebra crossing", 0.6),
        (2, 0, "zebra zebra stripes", 0.7),
        (3, 0, "plain words", 0.2),
        (4, 0, "more words", 0.3),
    ]
    for doc, seq, chunk, distance in chunks:
        conn.execute(
            "INSERT INTO docs_chunks (id, seq, chunk, chunk_hash, embedding) VALUES (%s, %s, %s,"
            " 'h', %s)",
            (doc, seq, chunk, text(toward(query, rng, distance)[0])),
        )
    rows = conn.execute(
        "SELECT key, seq, content, vector_rank, text_rank FROM embeddings.hybrid_search("
        "'docs', 'zebra', %s::halfvec, 4, fusion => 'rrf', text_match => 'all')",
        (text(query),),
    ).fetchall()
    # Documents by best chunk: vector 1, 3, 4, 2; text 2 (two zebras), 1.
    assert [r[0] for r in rows] == rrf([[1, 3, 4, 2], [2, 1]], weights=RRF_WEIGHTS)
    assert rows[0][:3] == (1, 0, "nothing to see")  # the best chunk by distance
    assert {r[0]: (r[3], r[4]) for r in rows}[2] == (4, 1)


@pytest.mark.parametrize("store", STORES)
def test_the_worker_keeps_the_tsvector(
    conn: Conn,
    minilm: str,
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
    store: str,
) -> None:
    """In the table, or in the side table beside the vector (store => 'side')."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes VALUES (1, 'shutil.rmtree removes trees'), (2, 'cats')")
    conn.execute(
        "SELECT embeddings.watch('notes', 'body', model => %s, fts => 'english'"
        f"{WATCH_ARGS[store]})",
        (minilm,),
    )
    tsvectors = "notes" if store == "row" else "notes_embeddings"
    run_once()
    rows = conn.execute(f"SELECT id, embedding_fts::text FROM {tsvectors} ORDER BY id").fetchall()
    assert rows == [(1, "'remov':3 'rmtree':2 'shutil':1 'tree':4"), (2, "'cat':1")]
    conn.execute("UPDATE notes SET body = 'dogs bark' WHERE id = 2")
    run_once()
    assert conn.execute(f"SELECT embedding_fts::text FROM {tsvectors} WHERE id = 2").fetchone() == (
        "'bark':2 'dog':1",
    )
    target = find_target(conn, "notes")
    found = search.ranked(conn, embedders.get, target, "rmtree", 2)  # auto: hybrid
    assert found[0]["key"] == 1 and found[0]["text_rank"] == 1 and found[0]["score"] > 0
    # Blank content: no vector, and no full-text match either (its tsvector is stale or gone).
    conn.execute("UPDATE notes SET body = '' WHERE id = 2")
    run_once()
    found = search.ranked(conn, embedders.get, target, "dogs bark", 2)
    assert [r["key"] for r in found] == [1]


def test_full_text_search_on_a_side_table_target(conn: Conn, items: Vec) -> None:
    """Turned on for a side-table target with vectors already: the side rows get their
    tsvectors from their rows' content; hybrid search ranks as for the table's own column."""
    conn.execute("CREATE TABLE side_items (id int PRIMARY KEY, tenant int, body text)")
    conn.execute("INSERT INTO side_items SELECT id, tenant, body FROM items")
    conn.execute(
        "SELECT embeddings.watch('side_items', 'body', model => %s, store => 'side')", (MODEL,)
    )
    conn.execute(
        "INSERT INTO side_items_embeddings (id, embedding, content_md5)"
        " SELECT id, embedding, md5(body) FROM items"
    )
    conn.execute("SELECT embeddings.enable_fts('side_items', 'english')")
    assert conn.execute(
        "SELECT count(*) FROM side_items_embeddings WHERE embedding_fts IS NOT NULL"
    ).fetchone() == (len(BODIES),)
    words = "directory OR folder OR negative OR url"
    # BM25's N is each table's row estimate (sql/59_bm25.sql): the same once both are analyzed.
    conn.execute("ANALYZE items, side_items")
    expected = conn.execute(
        "SELECT key, score, text_rank FROM embeddings.hybrid_search('items', %s, %s::halfvec, 5)",
        (words, text(items)),
    ).fetchall()
    assert (
        conn.execute(
            "SELECT key, score, text_rank FROM embeddings.hybrid_search('side_items', %s,"
            " %s::halfvec, 5)",
            (words, text(items)),
        ).fetchall()
        == expected
    )
    conn.execute("SELECT embeddings.disable_fts('side_items')")
    assert conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'side_items_embeddings'::regclass"
        " AND attname = 'embedding_fts' AND NOT attisdropped"
    ).fetchone() == (0,)


@pytest.mark.parametrize("store", STORES)
def test_turning_full_text_search_on_keeps_the_vector_indexes(conn: Conn, store: str) -> None:
    """enable_fts() drops the pgvector indexes of the table it fills and builds them again
    after the fill (sql/59_hybrid.sql says why): the same indexes, options and comments."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes SELECT i, 'note number ' || i FROM generate_series(1, 50) i")
    conn.execute(
        f"SELECT embeddings.watch('notes', 'body', model => %s{WATCH_ARGS[store]})", (MODEL,)
    )
    rel = "notes" if store == "row" else "notes_embeddings"
    rng = np.random.default_rng(9)
    if store == "row":
        for i in range(1, 51):
            conn.execute(
                "UPDATE notes SET embedding = %s WHERE id = %s",
                (text(unit(rng.standard_normal(DIMS))), i),
            )
    else:
        for i in range(1, 51):
            conn.execute(
                "INSERT INTO notes_embeddings (id, embedding, content_md5) VALUES (%s, %s, 'x')",
                (i, text(unit(rng.standard_normal(DIMS)))),
            )
    conn.execute(
        f"CREATE INDEX notes_small_graph ON {rel} USING hnsw (embedding halfvec_l2_ops)"
        " WITH (m = 4)"
    )
    conn.execute("COMMENT ON INDEX notes_small_graph IS 'kept'")
    indexes = (
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), obj_description(i.indexrelid,"
        " 'pg_class'), i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass ORDER BY 1"
    )
    before = conn.execute(indexes, (rel,)).fetchall()
    assert len([r for r in before if "hnsw" in r[1]]) == 2  # watch()'s and ours
    conn.execute("SELECT embeddings.enable_fts('notes', 'english')")
    after = conn.execute(indexes, (rel,)).fetchall()
    assert [r for r in after if "embedding_fts" not in r[1]] == before
    assert conn.execute(f"SELECT count(*) FROM {rel} WHERE embedding_fts IS NULL").fetchone() == (
        0,
    )


def test_a_model_changed_while_the_query_is_embedded_means_the_query_again(
    conn: Conn, minilm: str, embedders: LoadedModels
) -> None:
    """A model change may swap the column while the query is embedded: the target is read
    after the embedding, and the query is embedded again with the model the target has now
    (worker/retrieval/search.py); a query is never compared with another model's vectors."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (minilm,))
    target = find_target(conn, "notes")
    loads: list[str] = []

    def load(name: str) -> Any:
        loads.append(name)
        if len(loads) == 1:  # as if a swap to another model committed meanwhile
            conn.execute("UPDATE embeddings.targets SET model = 'gte-small', version = version + 1")
        return embedders.get(minilm)  # the same dimensions under another name

    assert search.ranked(conn, load, target, "anything", 2, mode="vector") == []
    assert loads == [minilm, "gte-small"]


def test_a_store_without_its_full_text_column_is_our_fault_not_the_callers(
    conn: Conn, items: Vec
) -> None:
    """An undefined column in our own statements (a store without the tsvector column its
    target says it has) is a fault of ours, a 500 (CLI exit 1), where 0.3.0 answered it as the
    caller's bad search (400, exit 2); a filter naming no column still is the caller's."""
    conn.execute("SET embeddings.following = 'on'")  # as if our DDL: not followed
    conn.execute("ALTER TABLE items DROP COLUMN embedding_fts")
    conn.execute("RESET embeddings.following")
    target = find_target(conn, "items")
    with pytest.raises(exceptions.DatabaseError, match="embedding_fts") as raised:
        rankings.run(conn, rankings.hybrid_ranking(target, "urlopen", items, 3))
    assert not isinstance(raised.value, errors.InvalidSearch)
    with pytest.raises(errors.InvalidSearch, match="has no column nope"):
        rankings.run(conn, rankings.by_vector_ranking(target, items, 3, {"nope": 1}))
