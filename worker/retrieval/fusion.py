"""How hybrid search fuses its two rankings: the tuning of embeddings.hybrid_search()
(sql/59_hybrid.sql), checked the same way for `embed-worker search` and `POST /search`.

  score = vector_weight / (rrf_k + vector_rank) + text_weight / (rrf_k + text_rank)

over each ranking cut at `depth` candidates (a ranking a document is missing from adds nothing).
The full-text ranking holds the documents with every word of the query (`text_match` "all")
or with any of them, ranked by BM25 ("any", sql/59_bm25.sql).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

# The most candidates per ranking a request may ask for: each is a row the vector ranking's
# index scan and the full-text ranking's scoring must produce (as pgvector caps
# hnsw.ef_search at 1000).
MAX_DEPTH = 1000
TEXT_MATCHES = ("all", "any")  # every word of the query, or any of them


@dataclass(frozen=True)
class Fusion:
    rrf_k: float = 60.0
    vector_weight: float = 1.0
    text_weight: float = 2.0  # (sql/59_hybrid.sql says why)
    depth: int = 100
    text_match: str = "all"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def parse(cls, given: dict[str, Any]) -> Fusion:
        """The tuning from `given` (names above; absent: the defaults), checked; ValueError
        naming the field if bad. JSON booleans are not numbers here."""
        values: dict[str, Any] = {}
        for name in ("rrf_k", "vector_weight", "text_weight"):
            value = given.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f'"{name}" must be a number')
            try:
                values[name] = float(value)
            except OverflowError:  # an integer of hundreds of digits: JSON allows it
                raise ValueError(f'"{name}" is out of range') from None
        depth = given.get("depth")
        if depth is not None:
            if isinstance(depth, bool) or not isinstance(depth, int):
                raise ValueError(f'"depth" must be an integer from 1 to {MAX_DEPTH}')
            values["depth"] = depth
        text_match = given.get("text_match")
        if text_match is not None:
            if text_match not in TEXT_MATCHES:
                raise ValueError(f'"text_match" must be "all" or "any", not {text_match!r}')
            values["text_match"] = text_match
        return cls(**values).checked()

    def checked(self) -> Fusion:
        """This tuning, if hybrid_search() takes it (ValueError naming the field if not)."""
        for name in ("rrf_k", "vector_weight", "text_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f'"{name}" must be a number of at least 0, not {value:g}')
        if self.vector_weight == 0 and self.text_weight == 0:
            raise ValueError('"vector_weight" and "text_weight" cannot both be 0')
        if not 1 <= self.depth <= MAX_DEPTH:
            raise ValueError(f'"depth" must be an integer from 1 to {MAX_DEPTH}, not {self.depth}')
        return self
