"""Target: a watched table the worker serves, as registered by embeddings.watch(); loading
targets from the database is worker/pipeline/targets.py's.

A target knows how to name its table, key, content and embedding column in SQL (through
psycopg.sql identifiers only), how to turn the row keys that jobs carry into canonical text,
and what is wrong with it, if anything, for the worker to serve it.

Row keys: a one-column key travels as its JSON scalar and is canonically the text Postgres
gives it; a composite key travels as a JSON array in key-column order and is canonically the
compact JSON array of its columns' canonical texts (`["7","a1"]`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from worker import queries

# Key types whose text form the worker normalises itself; any other type's key is taken as the
# text its JSON form carries (what to_jsonb() wrote) and cast by Postgres.
_INT_RANGES = {"int2": 2**15, "int4": 2**31, "int8": 2**63}


@dataclass(frozen=True)
class Target:
    id: int
    schema: str | None  # None: the table is gone
    table: str | None
    embedding_column: str
    embedding_type: str | None  # "vector" or "halfvec"; None when the column is gone
    embedding_dims: int
    content_column: str | None
    content_function: tuple[str, str] | None  # (schema, name)
    model: str
    key_columns: tuple[str, ...]
    key_types: tuple[str, ...]  # pg_type.typname of each key column
    queue: str
    version: int = 1  # of the definition (embeddings.targets.version) this object describes
    registry_problem: str | None = None  # embeddings.targets.problem
    # Chunked targets (worker/pipeline/chunks/): vectors in a chunk table, one per chunk.
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None
    # Documents (worker/pipeline/documents/, docs/documents.md): the content's format ("auto":
    # detected from the bytes; None: plain text, chunked as it is), whether it is a bytea
    # column (loaded as base64), and the context header's template (None: the default).
    document_format: str | None = None
    content_bytes: bool = False
    context_header: str | None = None
    has_fulltext: bool = False  # full-text search on (embeddings.enable_fts()): hybrid search
    # How the vectors are kept (embeddings.targets.store_kind, sql/54_stores.sql); the store
    # strategy is chosen by it (worker/pipeline/stores/). `chunked`: the kind keeps a vector per
    # chunk of a row, not one per row (embeddings_internal.store_has_chunks()).
    store_kind: str = "row"
    chunked: bool = False
    # Search's rerank stage by default (embeddings.set_rerank(), worker/retrieval/rerank.py).
    rerank_model: str | None = None
    rerank_depth: int | None = None
    # A model change in progress (sql/44_changes.sql) writes the new model's vectors to a shadow
    # column as well.
    shadow_model: str | None = None
    shadow_column: str | None = None
    shadow_dims: int = -1
    # The table's oid (embeddings.targets.source): a search's ranking names its table by it
    # (worker/retrieval/rankings.py); None for a target not read from the registry.
    source: int | None = None
    # schema.table.column as embeddings.status shows it (embeddings_internal.target_name(): each
    # part quoted where SQL would need it); None for a target not read from the registry, or
    # whose table is gone.
    qualified_name: str | None = None

    @property
    def in_change(self) -> bool:
        return self.shadow_model is not None and self.shadow_column is not None

    @property
    def composite(self) -> bool:
        return len(self.key_columns) > 1

    @property
    def name(self) -> str:
        """schema.table.column, as embeddings.status shows it and as logs, errors and metrics'
        `target` label name it: one name per target (`a."b.c".embedding` and
        `"a.b".c.embedding` are two tables); `target <id>` once the table is gone."""
        return self.qualified_name or f"target {self.id}"

    def matches_supabase(self, schema: str, table: str, column: str) -> bool:
        return (self.schema, self.table, self.embedding_column) == (schema, table, column)

    def problem(self, model_dims: int | None = None) -> str | None:
        """Why this target cannot be served, or None."""
        if self.table is None:
            return (
                f"target {self.id}: its table no longer exists"
                " (run SELECT embeddings.unwatch_dropped())"
            )
        if self.registry_problem is not None:
            return f"{self.name}: {self.registry_problem}"
        if self.content_column is None and self.content_function is None:
            return (
                f"{self.name}: its content function no longer exists; create it again and"
                " re-run embeddings.watch() with its name"
            )
        if self.embedding_type not in ("vector", "halfvec"):
            return f"{self.name}: the embedding column is missing or not vector/halfvec"
        if model_dims is not None and model_dims != self.embedding_dims:
            return (
                f"{self.name} is {self.embedding_type}({self.embedding_dims}) but model "
                f"{self.model!r} produces {model_dims} dimensions; alter the column or "
                f"re-watch with a matching model"
            )
        return None

    # --- SQL -------------------------------------------------------------------------------
    # The functions generated for each target (sql/32_access.sql) through which the worker reads
    # and writes its table, as the table's owner.
    FUNCTIONS = (
        "load",
        "lock_rows",
        "store",
        "blank",
        "forget",
        "reusable",
        "chunks",
        "clear_failing",
    )

    def sql_names(self, *, shadow: bool = False) -> dict[str, sql.Composable]:
        """The target's functions (`shadow`: those writing the shadow column of the model change
        in progress) and `key_arrays`: one text[] parameter per key column, after the keys."""
        if self.table is None or self.schema is None:
            raise ValueError(self.problem())
        names: dict[str, sql.Composable] = {
            name: self.function(name + ("_shadow" if shadow and name in ("store", "blank") else ""))
            for name in self.FUNCTIONS
        }
        names["key_arrays"] = sql.SQL("").join(
            sql.SQL(", {}::text[]").format(sql.Placeholder(f"k{i}"))
            for i in range(len(self.key_columns))
        )
        return names

    def function(self, name: str) -> sql.Identifier:
        """embeddings.embeddings_<id>_<name>, one of this target's functions."""
        return sql.Identifier("embeddings", self.function_name(name))

    def function_name(self, name: str) -> str:
        """embeddings_<id>_<name>: the name, in schema embeddings, of one of its functions."""
        return f"embeddings_{self.id}_{name}"

    def query(self, name: str, *, shadow: bool = False) -> sql.Composed:
        """Query `name` for this target; `shadow` aims its writes at the shadow column of the
        model change in progress."""
        if shadow:
            assert self.shadow_column is not None, "only a target in a change has a shadow column"
        return queries.compose(name, **self.sql_names(shadow=shadow))

    def key_params(self, keys: list[str]) -> dict[str, list[str]]:
        """Query parameters for canonical keys: "keys" and one array per key column."""
        params: dict[str, list[str]] = {"keys": keys}
        if not self.composite:
            params["k0"] = keys
            return params
        parts = [json.loads(k) for k in keys]
        for i in range(len(self.key_columns)):
            params[f"k{i}"] = [p[i] for p in parts]
        return params

    # --- keys ------------------------------------------------------------------------------
    def canonical_key(self, raw: Any) -> str:
        """The canonical text of a row key as a job carries it, or ValueError."""
        if not self.composite:
            return _canonical_part(raw, self.key_types[0])
        if not isinstance(raw, list) or len(raw) != len(self.key_columns):
            raise ValueError(
                f"invalid row key {raw!r}: expected a JSON array of"
                f" {len(self.key_columns)} values ({', '.join(self.key_columns)})"
            )
        parts = [_canonical_part(v, t) for v, t in zip(raw, self.key_types, strict=True)]
        return json.dumps(parts, ensure_ascii=False, separators=(",", ":"))


def _canonical_part(raw: Any, key_type: str) -> str:
    """The text form of one key column's value (`key::text` for the types normalised here)."""
    if key_type == "bool" and isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, bool) or raw is None or isinstance(raw, (list, dict)):
        raise ValueError(f"invalid row key {raw!r} for a {key_type} key")
    if key_type in _INT_RANGES:
        if isinstance(raw, float):
            raise ValueError(f"invalid row key {raw!r} for a {key_type} key")
        try:
            value = int(raw) if isinstance(raw, int) else int(str(raw).strip())
        except ValueError:
            raise ValueError(f"invalid row key {raw!r} for a {key_type} key") from None
        limit = _INT_RANGES[key_type]
        if not -limit <= value < limit:
            raise ValueError(f"row key {value} is out of range for {key_type}")
        return str(value)
    if key_type == "uuid":
        try:
            return str(uuid.UUID(str(raw)))
        except ValueError:
            raise ValueError(f"invalid row key {raw!r} for a uuid key") from None
    # A JSON number of a numeric or float key arrives as its text (messages.KeyNumber), every digit
    # kept; Postgres reads it back as the key's type.
    text = raw if isinstance(raw, str) else json.dumps(raw)
    if "\x00" in text:
        raise ValueError("row key contains a NUL character")
    return text
