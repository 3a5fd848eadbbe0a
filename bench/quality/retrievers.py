"""Retrievers under evaluation, each run inside Postgres against one corpus table.

A corpus table (`Table`) has `id integer`, `body text`, `embedding halfvec(dim)` and
`fts tsvector` (generated from `body` with the language configuration, GIN-indexed; `fts_split`
the same with dotted names split, below). A
retriever returns the ids of the best `k` items for a query given as text and as the query's
vector (embedded once, by the same model as the table).

Built in:
- `FullText("all")`: the rows matching `websearch_to_tsquery` (every term must occur, as in
  Supabase's hybrid-search guide), ranked by `ts_rank_cd`;
- `FullText("any")`: the rows matching any of the query's lexemes, ranked by `ts_rank_cd`;
- `Vector()`: exact cosine distance over the halfvec column (the table has no vector index);
- `Fusion(a, b)`: reciprocal rank fusion of two retrievers' top `depth` lists in one SQL
  statement, score = sum of weight / (rrf_k + rank), k = 60 and equal weights by default:
  the baseline a hybrid search must beat or match;
- `BM25()`: Okapi BM25 computed in Python with the corpus's exact statistics over the same
  lexemes (plain BM25: the text ranking issue 39's bar names), and `RankFusion(a, b)`, the same
  fusion as `Fusion` computed in Python, for a retriever that is not one SQL query.

To evaluate another implementation, e.g. the `embeddings` schema's hybrid search function, pass
`SqlFunction("embeddings.hybrid_search")` (`python -m bench --only quality --quality-function
embeddings.hybrid_search`): it is called as `fn(table regclass, query text, query_embedding
halfvec, k integer)` and the first column of its result rows is taken as the item id. A
retriever that needs the table set up first (a watch() with full-text search on, say) does it
in `prepare`, called once per table before any search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

Conn = psycopg.Connection[Any]
Vector32 = npt.NDArray[np.float32]
LANGUAGE = "english"


@dataclass(frozen=True)
class Table:
    name: str
    config: str = LANGUAGE

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.name)


def halfvec(vector: Vector32) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in vector.tolist()) + "]"


class Retriever(Protocol):
    @property
    def name(self) -> str: ...

    def prepare(self, conn: Conn, table: Table) -> None: ...

    def search(
        self, conn: Conn, table: Table, query: str, vector: Vector32, k: int
    ) -> list[int]: ...


class Ranked(Retriever, Protocol):
    """A retriever whose ranking is one SQL query of (id, rank) rows, so it can be fused."""

    def ranked(self, table: Table, depth: sql.Composable) -> sql.Composable: ...


LIMIT = sql.Placeholder("depth")


class _Ranked:
    name = "ranked"

    def prepare(self, conn: Conn, table: Table) -> None:
        pass

    def ranked(self, table: Table, depth: sql.Composable) -> sql.Composable:
        raise NotImplementedError

    def search(self, conn: Conn, table: Table, query: str, vector: Vector32, k: int) -> list[int]:
        statement = sql.SQL("SELECT id FROM ({}) AS r ORDER BY rank").format(
            self.ranked(table, LIMIT)
        )
        params = {"query": query, "vector": halfvec(vector), "depth": k}
        return [int(row[0]) for row in conn.execute(statement, params)]


# Postgres's default text parser reads a dotted name as one "host" token:
# `urllib.request.proxy_bypass` gives the lexemes 'urllib.request.proxy' and 'bypass', so a
# search for proxy_bypass cannot match it. Splitting at dots between word characters first (on
# both sides) avoids that; `FullText(split_dots=True)` measures what it is worth.
SPLIT_DOTS = r"regexp_replace({}, '(\w)\.(?=\w)', '\1 ', 'g')"


class FullText(_Ranked):
    """Full-text search: `match="all"` (websearch_to_tsquery) or `"any"` (an OR of the
    query's lexemes), ranked by ts_rank_cd; ties broken by id. `split_dots` searches the
    `fts_split` column (dotted names split into words) instead of `fts`."""

    def __init__(self, match: str = "all", *, split_dots: bool = False) -> None:
        if match not in ("all", "any"):
            raise ValueError(f"match must be 'all' or 'any', not {match!r}")
        self.match = match
        self.split_dots = split_dots
        self.name = ("fulltext" if match == "all" else "fulltext_any") + (
            "_split" if split_dots else ""
        )

    def tsquery(self, table: Table) -> sql.Composable:
        config = sql.Literal(table.config)
        text: sql.Composable = sql.Placeholder("query")
        if self.split_dots:
            text = sql.SQL(SPLIT_DOTS).format(text)
        if self.match == "all":
            return sql.SQL("websearch_to_tsquery({}, {})").format(config, text)
        # The lexemes as the configuration normalizes them, OR-ed; the cast keeps them as they
        # are (to_tsquery would stem them a second time).
        return sql.SQL(
            "(SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery"
            " FROM unnest(to_tsvector({}, {})))"
        ).format(config, text)

    def ranked(self, table: Table, depth: sql.Composable) -> sql.Composable:
        column = sql.Identifier("fts_split" if self.split_dots else "fts")
        return sql.SQL(
            "SELECT id, row_number() OVER (ORDER BY ts_rank_cd(t.{column}, q.query) DESC, id)"
            " AS rank FROM {table} AS t, {tsquery} AS q(query) WHERE t.{column} @@ q.query"
            " ORDER BY rank LIMIT {depth}"
        ).format(column=column, table=table.ident, tsquery=self.tsquery(table), depth=depth)


class Vector(_Ranked):
    """Exact nearest neighbours by cosine distance (a sequential scan: no index to miss)."""

    name = "vector"

    def ranked(self, table: Table, depth: sql.Composable) -> sql.Composable:
        return sql.SQL(
            "SELECT id, row_number() OVER (ORDER BY embedding <=> %(vector)s::halfvec, id) AS rank"
            " FROM {table} ORDER BY rank LIMIT {depth}"
        ).format(table=table.ident, depth=depth)


class Fusion(_Ranked):
    """Reciprocal rank fusion of two ranked retrievers, in SQL: each contributes
    weight / (rrf_k + rank) for the items in its first `depth` places; ties broken by id."""

    def __init__(
        self,
        first: Ranked,
        second: Ranked,
        *,
        rrf_k: int = 60,
        weights: tuple[float, float] = (1.0, 1.0),
        depth: int = 100,
        name: str | None = None,
    ) -> None:
        self.first, self.second = first, second
        self.rrf_k, self.weights, self.depth = rrf_k, weights, depth
        self.name = name or f"rrf({first.name},{second.name})"

    def ranked(self, table: Table, depth: sql.Composable) -> sql.Composable:
        candidates = sql.Literal(self.depth)
        return sql.SQL(
            "SELECT coalesce(a.id, b.id) AS id, row_number() OVER (ORDER BY"
            " coalesce({wa} / ({k} + a.rank), 0) + coalesce({wb} / ({k} + b.rank), 0) DESC,"
            " coalesce(a.id, b.id)) AS rank"
            " FROM ({first}) AS a FULL JOIN ({second}) AS b ON a.id = b.id"
            " ORDER BY rank LIMIT {depth}"
        ).format(
            wa=sql.Literal(float(self.weights[0])),
            wb=sql.Literal(float(self.weights[1])),
            k=sql.Literal(float(self.rrf_k)),
            first=self.first.ranked(table, candidates),
            second=self.second.ranked(table, candidates),
            depth=depth,
        )


class BM25:
    """Plain Okapi BM25, computed here with the corpus's exact statistics: tf = a lexeme's
    positions, length = a document's words (all its positions), k1 = 1.2, b = 0.75, the idf of
    Lucene's BM25, ln(1 + (N - df + 0.5) / (df + 0.5)); ties by id."""

    name = "bm25"

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._indexes: dict[str, _Postings] = {}

    def prepare(self, conn: Conn, table: Table) -> None:
        """The table's lexemes as Postgres made them (`fts_split`: the language configuration,
        dotted names split), read once."""
        if table.name not in self._indexes:
            self._indexes[table.name] = _Postings.read(conn, table)

    def ranking(self, conn: Conn, table: Table, query: str, depth: int) -> list[int]:
        """The `depth` best ids for the query's lexemes (made by the same to_tsvector)."""
        index = self._indexes[table.name]
        row = conn.execute(
            sql.SQL("SELECT tsvector_to_array(to_tsvector({}, {}))").format(
                sql.Literal(table.config), sql.SQL(SPLIT_DOTS).format(sql.Placeholder())
            ),
            (query,),
        ).fetchone()
        scores: dict[int, float] = {}
        for lexeme in row[0] if row else []:
            found = index.postings.get(lexeme, {})
            idf = math.log(1 + (index.n - len(found) + 0.5) / (len(found) + 0.5))
            for item, tf in found.items():
                norm = 1 - self.b + self.b * index.lengths[item] / index.mean_length
                scores[item] = scores.get(item, 0.0) + idf * tf * (self.k1 + 1) / (
                    tf + self.k1 * norm
                )
        return sorted(scores, key=lambda item: (-scores[item], item))[:depth]

    def search(self, conn: Conn, table: Table, query: str, vector: Vector32, k: int) -> list[int]:
        return self.ranking(conn, table, query, k)


@dataclass(frozen=True)
class _Postings:
    postings: dict[str, dict[int, int]]  # lexeme -> {id: tf}
    lengths: dict[int, int]
    n: int
    mean_length: float

    @classmethod
    def read(cls, conn: Conn, table: Table) -> _Postings:
        postings: dict[str, dict[int, int]] = {}
        lengths: dict[int, int] = {}
        for item, lexeme, tf in conn.execute(
            sql.SQL(
                "SELECT id, x.lexeme, cardinality(x.positions) FROM {}, unnest(fts_split) x"
            ).format(table.ident)
        ):
            postings.setdefault(lexeme, {})[item] = tf
            lengths[item] = lengths.get(item, 0) + tf
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()
        n = int(count[0]) if count else 0
        return cls(postings, lengths, n, sum(lengths.values()) / max(n, 1))


class RankFusion:
    """Reciprocal rank fusion of two retrievers' first `depth` results, computed in Python by
    `rrf` (equal weights, k = 60): `Fusion` for retrievers that are not one SQL query."""

    def __init__(
        self, first: Retriever, second: Retriever, *, depth: int = 100, name: str | None = None
    ) -> None:
        self.first, self.second, self.depth = first, second, depth
        self.name = name or f"rrf({first.name},{second.name})"

    def prepare(self, conn: Conn, table: Table) -> None:
        self.first.prepare(conn, table)
        self.second.prepare(conn, table)

    def search(self, conn: Conn, table: Table, query: str, vector: Vector32, k: int) -> list[int]:
        sides = [
            r.search(conn, table, query, vector, self.depth) for r in (self.first, self.second)
        ]
        return rrf(sides)[:k]


def rrf(
    rankings: list[list[int]], *, rrf_k: int = 60, weights: tuple[float, ...] | None = None
) -> list[int]:
    """Reciprocal rank fusion in Python (the reference `Fusion` is checked against): items by
    descending sum of weight / (rrf_k + rank), rank counted from 1; equal sums by the best
    single rank, then by id."""
    weights = weights or (1.0,) * len(rankings)
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for weight, ranking in zip(weights, rankings, strict=True):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (rrf_k + rank)
            best[item] = min(best.get(item, rank), rank)
    return sorted(scores, key=lambda item: (-scores[item], best[item], item))


HYBRID_SETUP = (
    "SELECT embeddings.watch({name}, 'body', model => 'all-MiniLM-L6-v2',"
    " backfill => false, fts => 'english')"
)
# Full-text fields (sql/59_hybrid.sql): the documented object's name as the title, through a
# content function `name || chr(31) || body` watched on a copy of the vectors (a second target
# of the table: its own tsvector, the same vectors), the title weighted {weight}.
FIELDS_COLUMN = "embedding_fields"
FIELDS_SETUP = (
    f"ALTER TABLE {{table}} ADD COLUMN {FIELDS_COLUMN} halfvec(384);"
    f" UPDATE {{table}} SET {FIELDS_COLUMN} = embedding;"
    " CREATE FUNCTION {function}(r {table}) RETURNS text LANGUAGE sql IMMUTABLE"
    " AS $$ SELECT r.name || chr(31) || r.body $$;"
    " SELECT embeddings.watch({name}, {function_name}, embedding_column => "
    f"'{FIELDS_COLUMN}', model => 'all-MiniLM-L6-v2', backfill => false, fts => 'english',"
    " fts_title_weight => {weight})"
)


@dataclass
class SqlFunction:
    """A search implemented as a set-returning SQL function:
    `fn(table regclass, query text, query_embedding halfvec, k integer)`, ids first."""

    function: str
    # SQL run once per table: `{table}` replaced by its name as an identifier, `{name}` as a
    # string literal.
    setup: str | None = None
    # Named arguments after the four, as SQL (`text_match => 'any'`), constants only.
    arguments: str = ""
    # Only the rows the function's full-text ranking holds (`text_rank` not null), by it: with
    # `vector_weight => 0`, hybrid_search()'s text ranking alone.
    text_only: bool = False
    # The table's embedding column the setup watches (None: any target of the table counts).
    column: str | None = None
    title_weight: float | None = None  # full-text fields: FIELDS_SETUP's

    @classmethod
    def fielded(cls, title_weight: float, arguments: str = "") -> SqlFunction:
        """hybrid_search() of the table's fielded target (FIELDS_SETUP)."""
        named = f"embedding_column => '{FIELDS_COLUMN}'" + (f", {arguments}" if arguments else "")
        return cls(
            "embeddings.hybrid_search",
            FIELDS_SETUP,
            named,
            column=FIELDS_COLUMN,
            title_weight=title_weight,
        )

    @classmethod
    def named(cls, function: str, arguments: str = "", *, text_only: bool = False) -> SqlFunction:
        """`function`, with the setup it needs: the project's hybrid search needs the table
        watched with full-text search on (its rows embedded already: no backfill)."""
        if function == "embeddings.hybrid_search":
            return cls(function, HYBRID_SETUP, arguments, text_only)
        return cls(function, arguments=arguments, text_only=text_only)

    @property
    def name(self) -> str:
        name = f"{self.function}({self.arguments})" if self.arguments else self.function
        return (f"{name}.text_rank" if self.text_only else name) + self.label

    @property
    def label(self) -> str:
        return f" [title weight {self.title_weight:g}]" if self.title_weight else ""

    def prepare(self, conn: Conn, table: Table) -> None:
        if self.setup and not _watched(conn, table, self.column):
            function = f"{table.name}_fields"
            conn.execute(
                sql.SQL(self.setup).format(
                    table=table.ident,
                    name=sql.Literal(table.name),
                    function=sql.Identifier(function),
                    function_name=sql.Literal(function),
                    weight=sql.Literal(self.title_weight),
                )
            )

    def search(self, conn: Conn, table: Table, query: str, vector: Vector32, k: int) -> list[int]:
        statement = sql.SQL("SELECT * FROM {}(%s::regclass, %s, %s::halfvec, %s{}) r{}").format(
            sql.Identifier(*self.function.split(".")),
            sql.SQL(", " + self.arguments if self.arguments else ""),
            sql.SQL(
                " WHERE r.text_rank IS NOT NULL ORDER BY r.text_rank" if self.text_only else ""
            ),
        )
        rows = conn.execute(statement, (table.name, query, halfvec(vector), k)).fetchall()
        return [int(row[0]) for row in rows]


def _watched(conn: Conn, table: Table, column: str | None = None) -> bool:
    """Whether `table` is watched already (by another variant of the same function), with
    embedding column `column` when given."""
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM embeddings.targets WHERE source = to_regclass(%s)"
        " AND (%s::name IS NULL OR embedding_column = %s::name))",
        (table.name, column, column),
    ).fetchone()
    return bool(row and row[0])
