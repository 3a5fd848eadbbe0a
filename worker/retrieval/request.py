"""A search as asked over HTTP (`POST /search`), checked before anything runs."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from worker.retrieval.fusion import Fusion

MAX_K = 100
MAX_RERANK_DEPTH = 200  # results one search may have the cross-encoder read (sql/57_rerank.sql)
RERANKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # as set_rerank() takes them
# "vector": by meaning only; "hybrid": fused with full-text search (the target needs it on:
# embeddings.enable_fts()); "auto": hybrid where the target has full-text search.
MODES = ("auto", "vector", "hybrid")
# What other search APIs (and our SQL functions) call a field: the hint of a field refused.
OTHER_NAMES = {
    "embedding_column": "column",
    "top_k": "k",
    "topk": "k",
    "limit": "k",
    "filters": "filter",
    "text": "query",
    "question": "query",
}
# The fields a search's body may hold.
FIELDS = (
    "table",
    "query",
    "k",
    "column",
    "filter",
    "mode",
    *Fusion.names(),
    "rerank",
    "rerank_depth",
)
REQUIRED = (
    'expected a JSON object with "table" (the table to search) and "query" (the text to '
    'search for): {"table": "documents", "query": "..."}'
)


@dataclass(frozen=True)
class SearchRequest:
    table: str
    query: str
    k: int = 5
    column: str | None = None
    filter: dict[str, Any] | None = None
    mode: str = "auto"
    # The hybrid ranking's tuning (None: hybrid_search()'s defaults); never with mode "vector".
    fusion: Fusion | None = None
    # The rerank stage (worker/retrieval/rerank.py): a cross-encoder's name, False for none,
    # None for the target's setting (embeddings.set_rerank()); how many results it reorders
    # (None: the target's, else the default).
    rerank: str | bool | None = None
    rerank_depth: int | None = None

    def __post_init__(self) -> None:
        # Postgres text cannot hold a NUL (so no name does): refused here, as the caller's
        # mistake, by whichever entry point made the request (HTTP, the CLI, Python), not
        # failed in the database.
        for field, text in (("table", self.table), ("query", self.query), ("column", self.column)):
            if text is not None and "\x00" in text:
                raise ValueError(f'"{field}" must not contain a NUL character')
        if self.filter is not None and _holds_nul(self.filter):
            raise ValueError('"filter" must not contain a NUL character, in a name or a value')

    @classmethod
    def parse(cls, body: Any) -> SearchRequest:
        """A request from a JSON body ({"table", "query", "k"?, "column"?, "filter"?,
        "mode"?, hybrid search's "rrf_k"?, "vector_weight"?, "text_weight"?, "depth"?, and the
        rerank stage's "rerank"? (a reranker's name, or false), "rerank_depth"?});
        ValueError if bad. The filter is a JSON object of column names
        (docs/http.md#post-search), checked against the table by embeddings.search(), never spliced
        into SQL."""
        if not isinstance(body, dict):
            raise ValueError(REQUIRED)
        _refuse_unknown(body)
        missing = [name for name in ("table", "query") if body.get(name) in (None, "")]
        if len(missing) == 2:
            raise ValueError(REQUIRED)
        table, query, k = body.get("table"), body.get("query"), body.get("k", 5)
        column = body.get("column")
        if not isinstance(table, str) or not table:
            raise ValueError('"table" must be a table name')
        if not isinstance(query, str) or not query.strip():
            raise ValueError('"query" must be a non-empty string')
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f'"k" must be an integer from 1 to {MAX_K}')
        if column is not None and not isinstance(column, str):
            raise ValueError('"column" must be a column name')
        filter = body.get("filter")
        if filter is not None and not isinstance(filter, dict):
            raise ValueError('"filter" must be a JSON object of column names')
        mode = body.get("mode", "auto")
        if mode not in MODES:
            raise ValueError(f'"mode" must be one of {", ".join(MODES)}')
        fusion = None
        if any(body.get(name) is not None for name in Fusion.names()):
            if mode == "vector":
                raise ValueError(
                    f"{', '.join(n for n in Fusion.names() if body.get(n) is not None)}: "
                    'these tune hybrid search, not "mode": "vector"'
                )
            fusion = Fusion.parse(body)
        rerank, rerank_depth = _rerank_of(body)
        return cls(table, query, k, column, filter, mode, fusion, rerank, rerank_depth)


def _holds_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character in any string or object key."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _refuse_unknown(body: dict[str, Any]) -> None:
    """A field the search does not know (a typo, another API's name for one) is refused, not
    ignored: a search that left out what its caller asked for would answer another question."""
    for name in body:
        if name not in FIELDS:
            close = difflib.get_close_matches(str(name), FIELDS, n=1)
            meant = OTHER_NAMES.get(name) or (close[0] if close else None)
            meant = f"; did you mean {meant!r}?" if meant else ""
            raise ValueError(
                f"unknown field {str(name)[:100]!r}{meant} (a search takes {', '.join(FIELDS)})"
            )


def _rerank_of(body: dict[str, Any]) -> tuple[str | bool | None, int | None]:
    rerank = body.get("rerank")
    if rerank is True or (
        rerank is not None
        and rerank is not False
        and (not isinstance(rerank, str) or not RERANKER_NAME.fullmatch(rerank))
    ):
        # A name, never a path: a request must not make the worker read any directory it names.
        raise ValueError(
            '"rerank" must be a reranker\'s name (a model directory on EMBED_MODEL_PATH: letters,'
            ' digits, ".", "_", "-"), or false for none'
        )
    depth = body.get("rerank_depth")
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise ValueError(f'"rerank_depth" must be an integer from 1 to {MAX_RERANK_DEPTH}')
        if not 1 <= depth <= MAX_RERANK_DEPTH:
            raise ValueError(f'"rerank_depth" must be an integer from 1 to {MAX_RERANK_DEPTH}')
        if rerank is False:
            raise ValueError('"rerank_depth": there is no rerank stage with "rerank": false')
    return rerank, depth
