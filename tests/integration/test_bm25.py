"""Any-word full-text ranking by BM25 (sql/59_bm25.sql): hybrid_search(text_match => 'any')
ranks as the BM25 written out here from the same statistics (df and mean length over the rows
the search may return, N from pg_class.reltuples), for every store kind, before the first
ANALYZE, under a filter and for a role whose row-level security hides pg_stats from it; and,
from embeddings.bm25_prune_rows rows, with the question's common words left out of its
candidates (their df counted apart, the rows left out counted in the mean length), and from
embeddings.bm25_sample_rows with the df estimated from a sample of the pages and the rarer words'
rows within a budget."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from bench.quality.retrievers import rrf
from tests.integration.test_search import DIMS, MODEL, text, toward, unit
from tests.support.stores import ALL_STORES, WATCH_ARGS
from worker.retrieval import rankings
from worker.retrieval.fusion import Fusion
from worker.retrieval.targets import find_target

Conn = psycopg.Connection[Any]
K1, B = 1.2, 0.75

# Documents of one or two chunks (split at " | " for a chunked target); `tenant` is id % 2.
BODIES = [
    "Remove a folder together with everything inside it.",
    "shutil.rmtree deletes a directory tree. | It removes every file below the directory.",
    "A file is opened, read and closed. The file object is returned. | Each file has a name.",
    "Copy a file to a folder, keeping the file's metadata where the platform keeps it.",
    "The quick brown fox jumps over the lazy dog.",
    "Parse JSON text into dictionaries and lists. | Errors raise JSONDecodeError.",
    "List the names in a directory, files and folders alike, in arbitrary order.",
    "Temporary directory: created on entry, removed with its contents on exit.",
    "Walk a directory tree top down or bottom up, yielding each folder's files.",
    "Compare two files byte by byte, or by their signatures only.",
]
QUERY = "how do I delete a folder and every file in it (shutil.rmtree)?"


def lexemes(conn: Conn, query: str) -> set[str]:
    row = conn.execute(
        "SELECT tsvector_to_array(to_tsvector('english',"
        r" regexp_replace(%s, '(\w)\.(?=\w)', '\1 ', 'g')))",
        (query,),
    ).fetchone()
    assert row is not None
    return set(row[0])


def reference(
    conn: Conn, relation: str, fts: str, query: str, *, rows: float, where: str = "true"
) -> dict[Any, float]:
    """BM25 as the SQL's comment defines it, over the rows of `relation` the connection may see
    that have a vector and pass `where`: each candidate's (a row holding any of the query's
    lexemes) score, keyed by its `key` column. `rows`: the table's rows as ANALYZE estimated
    them (pg_class.reltuples, -1 before the first ANALYZE)."""
    return Reference.of(conn, relation, fts, query, rows=rows, where=where).scores


class Reference:
    """The BM25 reference's figures: each candidate's score, the sum of the idf of the query's
    lexemes the candidates hold (the convex fusion's divisor) and the candidates holding every
    lexeme of the query."""

    def __init__(self, scores: dict[Any, float], mass: float, every: set[Any]) -> None:
        self.scores, self.mass, self.every = scores, mass, every

    @classmethod
    def of(
        cls,
        conn: Conn,
        relation: str,
        fts: str,
        query: str,
        *,
        rows: float,
        where: str = "true",
        depth: int = 100,
        prune_rows: float = 10_000,
        sample_rows: float = 200_000,
        budget: float = 10_000,
    ) -> Reference:
        wanted = lexemes(conn, query)
        docs: dict[Any, tuple[int, dict[str, int]]] = {}
        for key, length, lexeme, tf in conn.execute(
            f"SELECT key, length({fts}), x.lexeme, cardinality(x.positions)"
            f" FROM {relation}, unnest({fts}) x WHERE embedding IS NOT NULL AND {where}"
        ):
            docs.setdefault(key, (length, {}))[1][lexeme] = tf
        held = {
            key: (length, {w: tf for w, tf in tfs.items() if w in wanted})
            for key, (length, tfs) in docs.items()
            if wanted & tfs.keys()
        }
        df: dict[str, int] = {}
        for _, tfs in held.values():
            for w in tfs:
                df[w] = df.get(w, 0) + 1
        # The lexemes sought: from embeddings.bm25_prune_rows rows (ANALYZE's estimate) those a
        # tenth of N or fewer hold, or while the rarer ones' rows (their df summed) are fewer
        # than the depth; below it, all. From embeddings.bm25_sample_rows also only while the
        # rarer ones' rows with their own are within the budget (embeddings.bm25_candidate_rows;
        # df from a sample of the pages: here, tables under 10,000 rows, all of them). The
        # candidates hold one of them.
        sampled = max(rows, 0) >= sample_rows
        n = max(rows, max(df.values(), default=0))
        sought, rarer = set(), 0.0
        for w in sorted(df, key=lambda w: (df[w], w)):
            within = not sampled or rarer + df[w] <= budget
            if (
                (not sampled and max(rows, 0) < prune_rows)
                or rarer < depth
                or (df[w] * 10 <= n and within)
            ):
                sought.add(w)
            rarer += df[w]
        candidates = {key: doc for key, doc in held.items() if sought & doc[1].keys()}
        n = max(n, len(candidates))
        # The mean length: the candidates', with the rows left out counted in at their mean:
        # at most their number (each lexeme left out: its df less the candidates holding it),
        # or sampled, their number (in the sample, scaled: here all of them).
        outside = [length for key, (length, _) in held.items() if key not in candidates]
        weight = (
            len(outside)
            if sampled
            else sum(
                df[w] - sum(1 for _, tfs in candidates.values() if w in tfs)
                for w in df.keys() - sought
            )
        )
        total, count = float(sum(length for length, _ in candidates.values())), len(candidates)
        if outside:
            total, count = total + weight * sum(outside) / len(outside), count + weight
        mean = total / max(count, 1)
        idf = {w: math.log(1 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}
        scores = {
            key: sum(
                idf[w] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / mean))
                for w, tf in tfs.items()
            )
            for key, (length, tfs) in candidates.items()
        }
        every = {key for key, (_, tfs) in candidates.items() if tfs.keys() == wanted}
        return cls(scores, sum(idf.values()), every)


def ranked(scores: dict[Any, float]) -> list[Any]:
    return sorted(scores, key=lambda key: (-scores[key], key))


def reltuples(conn: Conn, relation: str) -> float:
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (relation,))
    found = row.fetchone()
    assert found is not None
    return float(found[0])


FTS = r"to_tsvector('english', regexp_replace({}, '(\w)\.(?=\w)', '\1 ', 'g'))"


class Items:
    """`items` watched as `store` with full-text search on from the start (its indexes built
    empty: no row estimate until ANALYZE), each document's vector at a known distance from
    `query` (document i the i-th nearest) and its tsvector written as the worker writes it."""

    def __init__(self, conn: Conn, store: str) -> None:
        self.conn, self.store = conn, store
        self.query = unit(np.random.default_rng(5).standard_normal(DIMS))
        rng = np.random.default_rng(6)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, tenant int, body text)")
        conn.execute(
            "SELECT embeddings.watch('items', 'body', model => %s, fts => 'english'"
            f"{WATCH_ARGS[store]})",
            (MODEL,),
        )
        for i, body in enumerate(BODIES, start=1):
            conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (i, i % 2, body))
            vector = text(toward(self.query, rng, 0.1 + 0.05 * (i - 1))[0])
            if store == "row":
                conn.execute(
                    f"UPDATE items SET embedding = %s, embedding_fts = {FTS.format('body')}"
                    " WHERE id = %s",
                    (vector, i),
                )
            elif store == "side":
                conn.execute(
                    "INSERT INTO items_embeddings (id, embedding, content_md5, embedding_fts)"
                    f" VALUES (%s, %s, 'x', {FTS.format('%s')})",
                    (i, vector, body),
                )
            else:  # later chunks a little farther: the first is the document's nearest
                for seq, chunk in enumerate(body.split(" | ")):
                    distance = 0.1 + 0.05 * (i - 1) + 0.01 * seq
                    conn.execute(
                        "INSERT INTO items_chunks (id, seq, chunk, chunk_hash, embedding)"
                        " VALUES (%s, %s, %s, 'h', %s)",
                        (i, seq, chunk, text(toward(self.query, rng, distance)[0])),
                    )
        self.target = find_target(conn, "items")

    @property
    def store_table(self) -> str:
        return {"row": "items", "side": "items_embeddings", "chunks": "items_chunks"}[self.store]

    def analyze(self) -> None:
        self.conn.execute(f"ANALYZE items, {self.store_table}")

    def rows(self) -> float:
        """N's estimate (search_rows_estimate()): the chunk table's rows, else the table's."""
        return reltuples(self.conn, "items_chunks" if self.store == "chunks" else "items")

    def scores(self, query: str, *, where: str = "true", depth: int = 100) -> dict[Any, float]:
        """Each document's reference score: a chunked target's by its best chunk."""
        return self.reference(query, where=where, depth=depth).scores

    def reference(self, query: str, *, where: str = "true", depth: int = 100) -> Reference:
        """The reference by document (with the embeddings.bm25_* settings as the session has them):
        a chunked target's scores by its best chunk, and the documents one of whose chunks
        holds every lexeme."""
        settings = self.conn.execute(
            "SELECT current_setting('embeddings.bm25_prune_rows', true),"
            " current_setting('embeddings.bm25_sample_rows', true),"
            " current_setting('embeddings.bm25_candidate_rows', true)"
        ).fetchone()
        prune_rows, sample_rows, budget = settings or (None, None, None)
        of = functools.partial(
            Reference.of,
            rows=self.rows(),
            where=where,
            depth=depth,
            prune_rows=float(prune_rows or 10_000),
            sample_rows=float(sample_rows or 200_000),
            budget=float(budget or 10_000),
        )
        fts = "fts" if self.store == "chunks" else "embedding_fts"
        if self.store == "row":
            relation = "(SELECT id AS key, * FROM items) r"
            return of(self.conn, relation, fts, query)
        key = "(x.id, x.seq)" if self.store == "chunks" else "x.id"
        relation = f"(SELECT {key} AS key, x.*, i.tenant FROM {self.store_table} x JOIN items i USING (id)) r"
        found = of(self.conn, relation, fts, query)

        def document(key: Any) -> Any:
            return int(key[0]) if self.store == "chunks" else key

        best: dict[Any, float] = {}
        for key, score in found.scores.items():
            best[document(key)] = max(best.get(document(key), 0.0), score)
        return Reference(best, found.mass, {document(key) for key in found.every})

    def text_ranking(
        self, query: str, filter: dict[str, Any] | None = None, *, depth: int = 100
    ) -> dict[Any, float]:
        """The target's BM25 ranking function's answer, in its order: key -> score."""
        row = self.conn.execute(
            f"SELECT embeddings.embeddings_{self.target.id}_bm25_ranking(%s, %s, %s)",
            (query, None if filter is None else Jsonb(filter), depth),
        ).fetchone()
        assert row is not None
        return {r["key"]: r["text_rank"] for r in row[0]}

    def check(self, found: dict[Any, float], expected: dict[Any, float], depth: int = 100) -> None:
        assert list(found) == ranked(expected)[:depth]
        for key, score in found.items():
            assert score == pytest.approx(expected[key]), key


@pytest.fixture(params=ALL_STORES)
def items(request: pytest.FixtureRequest, conn: Conn) -> Items:
    return Items(conn, request.param)


def test_any_word_ranks_by_bm25_as_written_out_here(items: Items) -> None:
    """Analyzed: N is the table's rows (its chunk table's); the scores, the text ranking and
    the fusion are the reference's."""
    items.analyze()
    assert items.rows() > 0
    expected = items.scores(QUERY)
    assert len(expected) >= 5, expected
    items.check(items.text_ranking(QUERY), expected)

    results = rankings.run(
        items.conn,
        rankings.hybrid_ranking(items.target, QUERY, items.query, 10, fusion=Fusion(fusion="rrf")),
    )
    by_vector = list(range(1, len(BODIES) + 1))  # document i is the i-th nearest
    assert [r["key"] for r in results] == rrf([by_vector, ranked(expected)], weights=(1, 2))
    assert {r["key"]: r["text_rank"] for r in results if r["text_rank"]} == {
        key: rank for rank, key in enumerate(ranked(expected), start=1)
    }


def test_before_the_first_analyze_n_is_the_candidates(items: Items) -> None:
    """A table never analyzed has no row estimate (reltuples -1): N is the candidates' count,
    so the commonest lexeme's idf is low, and the ranking still the reference's."""
    assert items.rows() == -1
    items.check(items.text_ranking(QUERY), items.scores(QUERY))


def test_a_filter_narrows_the_statistics_to_the_rows_it_keeps(items: Items) -> None:
    items.analyze()
    expected = items.scores(QUERY, where="r.tenant = 1")
    found = items.text_ranking(QUERY, {"tenant": 1})
    assert found and all(key % 2 == 1 for key in found)
    items.check(found, expected)


SHALLOW = "file folder tree"  # held by 6, 4 and 2 of the 10 documents


def test_below_the_prune_rows_every_holder_is_ranked(items: Items) -> None:
    """A table under embeddings.bm25_prune_rows (10,000 rows by default) has no word left out,
    its df never counted apart: at depth 2 the ranking is the full ranking's first two."""
    items.analyze()
    full = items.scores(SHALLOW)
    assert items.scores(SHALLOW, depth=2) == full
    items.check(items.text_ranking(SHALLOW, depth=2), full, depth=2)


def test_a_shallow_ranking_scores_the_holders_of_its_rarer_words(items: Items) -> None:
    """At depth 2 `file` and `folder` are left out of the candidates' query (each held by more
    than a tenth of the rows, and `tree`'s rows already two): only the documents holding `tree`
    are scored, `file` and `folder` still counted in their scores, their df over every row and
    the mean length with the rows left out counted in, as the reference writes them out."""
    items.analyze()
    items.conn.execute("SET embeddings.bm25_prune_rows = 0")
    shallow = items.scores(SHALLOW, depth=2)
    full = items.scores(SHALLOW, depth=100)  # every holder: the rarer words' rows too few
    assert 0 < len(shallow) < len(full)  # some documents left out
    assert shallow != {key: full[key] for key in shallow}  # another mean length
    items.check(items.text_ranking(SHALLOW, depth=2), shallow, depth=2)


def test_a_shallow_ranking_before_the_first_analyze(items: Items) -> None:
    """No row estimate (reltuples -1) counts as 0 rows against the threshold, and N is then the
    largest df or the candidates, whichever is more: the reference's still."""
    assert items.rows() == -1
    items.conn.execute("SET embeddings.bm25_prune_rows = 0")
    items.check(items.text_ranking(SHALLOW, depth=2), items.scores(SHALLOW, depth=2), depth=2)


def test_a_shallow_ranking_under_a_filter_counts_its_rows_only(items: Items) -> None:
    """The filter's condition applies to the df counts, the candidates and the rows left out
    alike (the statement's parts around it, run through EXECUTE)."""
    items.analyze()
    items.conn.execute("SET embeddings.bm25_prune_rows = 0")
    expected = items.scores(SHALLOW, where="r.tenant = 1", depth=1)
    found = items.text_ranking(SHALLOW, {"tenant": 1}, depth=1)
    assert found and all(key % 2 == 1 for key in found)
    items.check(found, expected, depth=1)


def test_a_sampled_ranking_where_the_sample_is_the_whole_table(items: Items) -> None:
    """From embeddings.bm25_sample_rows the words' df come from a sample of the store's pages:
    under 10,000 rows all of them, so the df are exact and the ranking the reference's, the rows
    left out now counted in the mean length by their number (not at most: a row holding two
    words left out once), with a filter (three parts, through EXECUTE) and without."""
    items.analyze()
    items.conn.execute("SET embeddings.bm25_prune_rows = 0")
    counted = items.scores(SHALLOW, depth=2)
    items.conn.execute("SET embeddings.bm25_sample_rows = 0")
    sampled = items.scores(SHALLOW, depth=2)
    assert sampled.keys() == counted.keys() and sampled != counted  # another mean length
    items.check(items.text_ranking(SHALLOW, depth=2), sampled, depth=2)
    expected = items.scores(SHALLOW, where="r.tenant = 1", depth=1)
    found = items.text_ranking(SHALLOW, {"tenant": 1}, depth=1)
    assert found and all(key % 2 == 1 for key in found)
    items.check(found, expected, depth=1)


def test_a_sampled_ranking_scores_the_rarer_words_within_the_budget(items: Items) -> None:
    """On a sampled table the rarer words are sought only while their rows sum to at most
    embeddings.bm25_candidate_rows: `brown` and `byte` (one document each, a tenth of the rows
    or fewer) are both sought under the default budget, and byte's document (the word twice)
    ranks first; under a budget of one row `brown` alone is (the first of the rarest, always
    sought: the depth's rows), and its document is the ranking."""
    items.analyze()
    query = "brown byte"
    items.conn.execute("SET embeddings.bm25_sample_rows = 0")
    unbounded = items.scores(query, depth=1)
    assert ranked(unbounded) == [10, 5]
    items.check(items.text_ranking(query, depth=1), unbounded, depth=1)
    items.conn.execute("SET embeddings.bm25_candidate_rows = 1")
    budgeted = items.scores(query, depth=1)
    assert budgeted.keys() == {5}
    items.check(items.text_ranking(query, depth=1), budgeted, depth=1)


def test_a_sample_of_a_large_table_estimates_df_alike_on_every_call(conn: Conn) -> None:
    """On 40,000 rows a quarter of the pages is sampled (about 10,000 rows): the df of the
    words held by a quarter and by all of the rows are scaled from it, so the scores are the
    counted statement's within the sample's error (page by page: up to about a tenth in a
    word's df), the order the same, and a question asked twice ranks alike (the same pages)."""
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('big', 'body', model => %s, fts => 'english')", (MODEL,))
    conn.execute(
        "INSERT INTO big SELECT g, CASE WHEN g % 5000 = 0 THEN 'rare ' ELSE '' END"
        " || CASE WHEN g % 4 = 0 THEN 'middle ' ELSE '' END || 'common words'"
        " FROM generate_series(1, 40000) g"
    )
    vector = text(unit(np.random.default_rng(7).standard_normal(DIMS)))
    conn.execute(
        "UPDATE big SET embedding = %s, embedding_fts = to_tsvector('english', body)", (vector,)
    )
    conn.execute("ANALYZE big")
    ranking = (
        f"SELECT embeddings.embeddings_{find_target(conn, 'big').id}_bm25_ranking(%s, NULL, 20)"
    )
    query = "rare middle common"

    def ranked_now() -> dict[Any, float]:
        row = conn.execute(ranking, (query,)).fetchone()
        assert row is not None
        return {r["key"]: r["text_rank"] for r in row[0]}

    conn.execute("SET embeddings.bm25_prune_rows = 0")
    counted = ranked_now()
    conn.execute("SET embeddings.bm25_sample_rows = 0")
    sampled = ranked_now()
    assert list(sampled) == list(counted) and len(counted) == 20
    assert [key % 5000 for key in list(counted)[:8]] == [0] * 8  # the rare word's rows first
    for key, score in counted.items():
        assert sampled[key] == pytest.approx(score, rel=0.1), key
    assert ranked_now() == sampled


@pytest.mark.parametrize("sampled", [False, True], ids=["counted", "sampled"])
def test_a_role_that_cannot_read_pg_stats_ranks_what_it_may_see(
    items: Items, role: str, sampled: bool
) -> None:
    """Row-level security on the table: pg_stats shows the role nothing of it (nor of the side
    or chunk table, whose policy follows the table's), and the ranking is BM25 over the rows
    the role sees, N still the table's estimate (pg_class, which anyone reads). Sampled (at
    depth 2, words left out), the sample holds the role's rows only: their df and mean length
    the role's."""
    conn = items.conn
    items.analyze()
    query, depth = QUERY, 100
    if sampled:
        conn.execute("SET embeddings.bm25_sample_rows = 0")
        query, depth = SHALLOW, 2
    conn.execute(f"GRANT SELECT ON items, {items.store_table} TO {role}")
    conn.execute("ALTER TABLE items ENABLE ROW LEVEL SECURITY")
    conn.execute(f"CREATE POLICY odd ON items FOR SELECT TO {role} USING (tenant = 1)")
    stats = (
        "SELECT count(*) FROM pg_stats WHERE tablename = %s AND attname IN ('embedding_fts', 'fts')"
    )
    assert conn.execute(stats, (items.store_table,)).fetchone() == (1,)
    conn.execute(f"SET ROLE {role}")
    try:
        assert conn.execute(stats, (items.store_table,)).fetchone() == (0,)
        expected = items.scores(query, depth=depth)  # as the role: its rows only
        found = items.text_ranking(query, depth=depth)
    finally:
        conn.execute("RESET ROLE")
    assert expected and all(key % 2 == 1 for key in expected)
    items.check(found, expected, depth=depth)


def test_bm25_puts_the_rare_word_above_many_common_ones(conn: Conn) -> None:
    """What ts_rank_cd got wrong: an OR of the question's words ranked the long passage that
    repeats its common words first; BM25 ranks the short one holding its rare word first."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    wordy = (
        "A file in a folder is listed with its size, owner, group, permissions and times; the"
        " folder listing shows each file, hidden files included, sorted by name or extension,"
        " newest file first, with totals per folder and a summary of files and folders."
    )
    notes = [wordy, "rmtree: gone for good.", "Folders hold files.", "Files are bytes."]
    for i, body in enumerate(notes, start=1):
        conn.execute("INSERT INTO notes VALUES (%s, %s)", (i, body))
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (MODEL,))
    conn.execute("UPDATE notes SET embedding = array_fill(0.1::real, ARRAY[%s])", (DIMS,))
    conn.execute("SELECT embeddings.enable_fts('notes', 'english')")
    conn.execute("ANALYZE notes")
    question = "rmtree a file or folder"
    cover_density = conn.execute(
        "SELECT id FROM notes, to_tsquery('english', 'rmtree | file | folder') q"
        " WHERE embedding_fts @@ q ORDER BY ts_rank_cd(embedding_fts, q) DESC, id"
    ).fetchall()
    assert cover_density[0] == (1,)
    target = find_target(conn, "notes")
    row = conn.execute(
        f"SELECT embeddings.embeddings_{target.id}_bm25_ranking(%s, NULL, 10)", (question,)
    ).fetchone()
    assert row is not None
    found = [r["key"] for r in row[0]]
    assert found[0] == 2
    relation = "(SELECT id AS key, * FROM notes) r"
    assert found == ranked(reference(conn, relation, "embedding_fts", question, rows=4))


def test_a_question_of_stop_words_has_no_text_ranking(conn: Conn, items: Items) -> None:
    """No lexeme, no tsquery: every result comes from the vector ranking alone, with no
    error and no notice about an empty query."""
    notices: list[str] = []
    conn.add_notice_handler(lambda n: notices.append(str(n.message_primary)))
    results = rankings.run(
        conn,
        rankings.hybrid_ranking(
            items.target, "how do I do it?", items.query, 3, fusion=Fusion(text_match="any")
        ),
    )
    assert [r["key"] for r in results] == [1, 2, 3]
    assert all(r["text_rank"] is None for r in results) and notices == []


def test_the_any_word_query_keeps_lexemes_as_they_are(conn: Conn) -> None:
    """Quotes, backslashes and tsquery operators inside a lexeme stay the lexeme's: the query
    matches each word, and none of the words their parts would make."""
    words = ["it's", "a\\b", "x:y", "a|b", "!", "'", "sp ace"]
    query = "embeddings_internal.any_lexeme_query(array_to_tsvector(%s::text[]))"
    for word in words:
        row = conn.execute(f"SELECT array_to_tsvector(%s::text[]) @@ {query}", ([word], words))
        assert row.fetchone() == (True,), word
    parts = ["it", "s", "a", "b", "x", "y", "sp", "ace"]
    row = conn.execute(f"SELECT array_to_tsvector(%s::text[]) @@ {query}", (parts, words))
    assert row.fetchone() == (False,)
    assert conn.execute("SELECT embeddings_internal.any_lexeme_query(''::tsvector)").fetchone() == (
        None,
    )


def test_the_default_is_any_word_fused_by_score(conn: Conn, items: Items) -> None:
    """The default (measured: docs/retrieval-quality.md) is any word and the convex fusion, as
    text_match => 'any', fusion => 'convex'."""
    assert (Fusion().text_match, Fusion().fusion) == ("any", "convex")
    statement = (
        "SELECT key, score, text_rank FROM embeddings.hybrid_search('items', %s, %s::halfvec, 5{})"
    )
    default = conn.execute(statement.format(""), ("directory tree", text(items.query))).fetchall()
    named = conn.execute(
        statement.format(", text_match => 'any', fusion => 'convex', text_weight => 0.2"),
        ("directory tree", text(items.query)),
    ).fetchall()
    assert default == named and any(r[2] for r in default)


@pytest.mark.parametrize(
    ("question", "selective"),
    [
        (QUERY, False),  # no document holds every word
        ("directory tree", True),  # two do: each gets the every-word bonus
        ("file", True),  # one word: the six documents holding it hold every word
        ("parse a folder of json", False),  # none holds all three words
    ],
)
def test_the_convex_fusion_weighs_the_scores_as_written_out_here(
    items: Items, question: str, selective: bool
) -> None:
    """score = vector_weight * (1 - distance) + text_weight * text_score, text_score the BM25
    score over the sum of the idf of the query's lexemes the candidates hold, plus 2.5 for one
    of at most 10 documents holding every lexeme (sql/59_hybrid.sql), for every store kind.
    Every document is in both rankings' candidates here: no floor applies."""
    items.analyze()
    expected = items.reference(question)
    assert (1 <= len(expected.every) <= 10) == selective
    results = rankings.run(
        items.conn,
        rankings.hybrid_ranking(
            items.target, question, items.query, 10, fusion=Fusion(vector_weight=0.5)
        ),
    )
    assert len(results) == len(BODIES)
    reference = {
        r["key"]: 0.5 * (1 - r["distance"])
        + 0.2
        * (
            expected.scores.get(r["key"], 0.0) / expected.mass
            + (2.5 if selective and r["key"] in expected.every else 0.0)
        )
        for r in results
    }
    for r in results:
        assert r["score"] == pytest.approx(reference[r["key"]]), r["key"]
    assert [r["key"] for r in results] == sorted(reference, key=lambda k: -reference[k])
    if selective:  # the bonus lifts the documents holding every word above the others
        assert {r["key"] for r in results[: len(expected.every)]} == expected.every


def test_a_session_without_standard_conforming_strings_ranks_alike(items: Items, dsn: str) -> None:
    """A session (a legacy application's, a role's or database's default) with
    standard_conforming_strings off parses our functions' bodies with backslashes as escapes:
    any_lexeme_query()'s '\\' ended its string early (a syntax error), '\\1 ' became chr(1).
    Written as escape strings, they rank the same, any word and every word, and make the
    same tsvector (tests/unit/test_escape_literals.py keeps them so)."""
    items.analyze()
    vector = text(items.query)
    statement = (
        "SELECT key, score, text_rank FROM embeddings.hybrid_search('items', %s, %s::halfvec,"
        " 5, text_match => %s)"
    )
    fields = "SELECT embeddings_internal.fields_tsvector('english', %s)::text"
    found = {}
    for setting in ("on", "off"):
        with psycopg.connect(dsn, autocommit=True) as session:  # bodies parsed afresh
            session.execute(f"SET standard_conforming_strings = {setting}")
            session.execute("SET escape_string_warning = off")
            found[setting] = [
                session.execute(statement, (QUERY, vector, match)).fetchall()
                for match in ("any", "all")
            ] + [session.execute(fields, ("os.path a\\b" + chr(31) + "x.y",)).fetchall()]
    assert found["off"] == found["on"]
    assert any(row[2] for row in found["on"][0])
