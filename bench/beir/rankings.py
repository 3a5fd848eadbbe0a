"""The rankings the BEIR bench scores, each through the product's public SQL functions and
through `POST /search` of a real worker, which must return the same documents in the same order.

    vector     embeddings.search()                         {"mode": "vector"}
    full-text  embeddings.hybrid_search(vector_weight => 0, text_match => ..., fusion =>
               'rrf'), the rows it ranked by full text (text_rank not null), by that rank
                                                           {"mode": "hybrid", the same options}
    hybrid     embeddings.hybrid_search(options)           {"mode": "hybrid", options}

Options are hybrid_search()'s named arguments, as JSON-able values (POST /search takes the
same names). The SQL call is timed alone, from Python, with the query's vector embedded
beforehand: the latency a search costs in the database, round trip included.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql

Vector32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Ranking:
    name: str
    label: str  # how the table prints it
    function: str  # "search" or "hybrid_search"
    options: Mapping[str, Any] = field(default_factory=dict)
    text_only: bool = False  # the full-text ranking alone: rows with a text_rank, by it

    def with_title_weight(self, weight: float) -> Ranking:
        """This ranking, named for a table whose title is weighted `weight` (the same call)."""
        return replace(
            self,
            name=f"{self.name}[title={weight:g}]",
            label=f"{self.label}, title weight {weight:g}",
        )

    @property
    def body(self) -> dict[str, Any]:
        """POST /search's fields for this ranking (beside table, query, k)."""
        if self.function == "search":
            return {"mode": "vector"}
        return {"mode": "hybrid", **self.options}

    def statement(self) -> sql.Composed:
        if self.function == "search":
            return sql.SQL(
                "SELECT key #>> '{{}}' FROM embeddings.search(%(table)s::regclass, %(vector)s, %(k)s)"
            ).format()
        named = sql.SQL("").join(
            sql.SQL(", {} => {}").format(sql.Identifier(name), sql.Literal(value))
            for name, value in self.options.items()
        )
        statement = sql.SQL(
            "SELECT r.key #>> '{{}}' FROM embeddings.hybrid_search("
            "%(table)s::regclass, %(text)s, %(vector)s, %(k)s{}) r"
        ).format(named)
        if self.text_only:
            statement = sql.SQL("{} WHERE r.text_rank IS NOT NULL ORDER BY r.text_rank").format(
                statement
            )
        return statement


def default_rankings(text_match: str = "any") -> list[Ranking]:
    """The product's rankings, its defaults first: vector, full-text alone, hybrid."""
    return [
        Ranking("vector", "vector, `search()`", "search"),
        # Places, not scores: with vector_weight 0 a document only the vector ranking holds
        # then scores 0, where the convex fusion would give it the text ranking's lowest score
        # and let it take the place of a text result among the first k.
        Ranking(
            "fulltext",
            "full-text only, `hybrid_search(vector_weight => 0,"
            f" text_match => '{text_match}', fusion => 'rrf')`",
            "hybrid_search",
            {"vector_weight": 0, "text_match": text_match, "fusion": "rrf"},
            text_only=True,
        ),
        Ranking("hybrid", "hybrid, `hybrid_search()` defaults", "hybrid_search"),
    ]


def parse_option_list(text: str) -> dict[str, Any]:
    """`name=value,name=value` (numbers as numbers, the rest as strings) as options."""
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected name=value, not {part!r}")
        options[name.strip()] = _value(value.strip())
    return options


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def hybrid_variant(options: Mapping[str, Any]) -> Ranking:
    shown = ", ".join(f"{name} => {_sql_literal(value)}" for name, value in options.items())
    return Ranking(
        "hybrid(" + ",".join(f"{n}={v}" for n, v in options.items()) + ")",
        f"hybrid, `hybrid_search({shown})`",
        "hybrid_search",
        dict(options),
    )


def _sql_literal(value: Any) -> str:
    return repr(value).replace('"', "'") if isinstance(value, str) else str(value)


@dataclass
class Ranked:
    """One ranking's results: each query's document ids, best first, and the SQL call's time."""

    rankings: dict[str, list[str]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)


class SqlSearch:
    """Rankings called as the SQL functions, on one connection, with each query's vector
    embedded beforehand: the call alone is timed, round trip included."""

    def __init__(self, dsn: str, table: str, *, vectors: Mapping[str, Vector32], k: int) -> None:
        self.table = table
        self.vectors = vectors
        self.k = k
        self._conn = psycopg.connect(dsn, autocommit=True)
        register_vector(self._conn)

    def search(self, ranking: Ranking, query_id: str, text: str) -> tuple[float, list[str]]:
        """One call of `ranking`: the seconds it took, and the documents' ids, best first."""
        vector = HalfVector(self.vectors[query_id])
        params = {"table": self.table, "text": text, "vector": vector, "k": self.k}
        statement = ranking.statement()
        started = time.perf_counter()
        rows = self._conn.execute(statement, params).fetchall()
        return time.perf_counter() - started, [str(row[0]) for row in rows]

    def close(self) -> None:
        self._conn.close()


class HttpSearch:
    """The same rankings through POST /search: the worker embeds each query itself, and the
    time is what an application waits for."""

    def __init__(self, port: int, table: str, *, k: int) -> None:
        self.table = table
        self.k = k
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def search(self, ranking: Ranking, query_id: str, text: str) -> tuple[float, list[str]]:
        seconds, results = _post_search(self._conn, self.table, ranking, text, self.k)
        if ranking.text_only:
            results = sorted(
                (r for r in results if r["text_rank"] is not None),
                key=lambda r: r["text_rank"],
            )
        return seconds, [_key(r["key"]) for r in results]

    def close(self) -> None:
        self._conn.close()


def rank(search: SqlSearch | HttpSearch, ranking: Ranking, queries: Mapping[str, str]) -> Ranked:
    """`ranking`'s results for each query, and each call's time."""
    ranked = Ranked()
    for query_id, text in queries.items():
        seconds, ranked.rankings[query_id] = search.search(ranking, query_id, text)
        ranked.seconds.append(seconds)
    return ranked


def alternating_p50(
    search: SqlSearch | HttpSearch,
    chosen: Sequence[Ranking],
    queries: Mapping[str, str],
    *,
    rounds: int = 2,
) -> dict[str, float]:
    """Each ranking's median latency in ms, the rankings called in turn for every query
    (round after round): on a shared machine, whose speed drifts, their ratio is fair where
    figures of runs minutes apart are not."""
    seconds: dict[str, list[float]] = {r.name: [] for r in chosen}
    for _ in range(rounds):
        for query_id, text in queries.items():
            for ranking in chosen:
                seconds[ranking.name].append(search.search(ranking, query_id, text)[0])
    return {name: round(statistics.median(s) * 1000, 2) for name, s in seconds.items()}


def _post_search(
    conn: http.client.HTTPConnection, table: str, ranking: Ranking, text: str, k: int
) -> tuple[float, list[dict[str, Any]]]:
    """One POST /search of `ranking`: the seconds it took, and its results."""
    body = json.dumps({"table": table, "query": text, "k": k, **ranking.body})
    started = time.perf_counter()
    conn.request("POST", "/search", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    data = answer.read()
    seconds = time.perf_counter() - started
    if answer.status != 200:
        raise RuntimeError(f"POST /search {ranking.name}: {answer.status} {data[:300]!r}")
    results: list[dict[str, Any]] = json.loads(data)["results"]
    return seconds, results


def _key(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(key)
