"""A search as asked over HTTP (`POST /search`), checked before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.retrieval.fusion import Fusion

MAX_K = 100
# "vector": by meaning only; "hybrid": fused with full-text search (the target needs it on:
# embeddings.enable_fts()); "auto": hybrid where the target has full-text search.
MODES = ("auto", "vector", "hybrid")


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

    @classmethod
    def parse(cls, body: Any) -> SearchRequest:
        """A request from a JSON body ({"table", "query", "k"?, "column"?, "filter"?,
        "mode"?, and hybrid search's "rrf_k"?, "vector_weight"?, "text_weight"?, "depth"?});
        ValueError if bad. The filter is a JSON object of column names
        (docs/http.md#post-search), checked against the table by embeddings.search(), never spliced
        into SQL."""
        if not isinstance(body, dict):
            raise ValueError('expected a JSON object with "table" and "query"')
        table, query, k = body.get("table"), body.get("query"), body.get("k", 5)
        column = body.get("column")
        # No NUL: Postgres text cannot hold one, so no table name does.
        if not isinstance(table, str) or not table or "\x00" in table:
            raise ValueError('"table" must be a table name')
        if not isinstance(query, str) or not query.strip():
            raise ValueError('"query" must be a non-empty string')
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f'"k" must be an integer from 1 to {MAX_K}')
        if column is not None and (not isinstance(column, str) or "\x00" in column):
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
        return cls(table, query, k, column, filter, mode, fusion)
