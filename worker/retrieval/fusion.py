"""How hybrid search fuses its two rankings: the tuning of embeddings.hybrid_search()
(sql/59_hybrid.sql), checked the same way for `embed-worker search` and `POST /search`.

Each ranking is cut at `depth` candidates. `fusion` "convex" (the default) weighs the scores,

  score = vector_weight * cosine similarity + text_weight * text score

(the text score on a scale that does not depend on the query); "rrf" the places,

  score = vector_weight / (rrf_k + vector_rank) + text_weight / (rrf_k + text_rank).

The full-text ranking holds the documents with any word of the query, ranked by BM25
(`text_match` "any", sql/59_bm25.sql, the default), or with every word ("all"). The defaults
are hybrid_search()'s; text_weight's depends on the fusion (None here: the SQL function's).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# The most candidates per ranking a request may ask for: each is a row the vector ranking's
# index scan and the full-text ranking's scoring must produce (as pgvector caps
# hnsw.ef_search at 1000).
MAX_DEPTH = 1000
# The range of rrf_k and the weights, besides 0, and that the weights are not both 0, are
# hybrid_search()'s rules (hybrid_tuning_check() in sql/59_hybrid.sql says why), checked here
# too so that a request is refused before its question is embedded, in the words SQL uses
# without its "embeddings.hybrid_search: " (tests/integration/test_hybrid.py compares them).
SMALLEST, LARGEST = 1e-6, 1e6
TEXT_MATCHES = ("all", "any")  # every word of the query, or any of them
FUSIONS = ("convex", "rrf")  # weighted scores, or reciprocal ranks
RRF_K = 60.0  # hybrid_search()'s rank constant unless given (rrf's alone)


@dataclass(frozen=True)
class Fusion:
    rrf_k: float | None = None  # None: RRF_K; given, for fusion "rrf" only (checked())
    vector_weight: float = 1.0
    text_weight: float | None = None  # None: the fusion's own (sql/59_hybrid.sql says why)
    depth: int = 100
    text_match: str = "any"
    fusion: str = "convex"

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
        fusion = given.get("fusion")
        if fusion is not None:
            if fusion not in FUSIONS:
                raise ValueError(f'"fusion" must be "convex" or "rrf", not {fusion!r}')
            values["fusion"] = fusion
        return cls(**values).checked()

    def checked(self) -> Fusion:
        """This tuning, if hybrid_search() takes it (ValueError naming the field if not)."""
        for name in ("rrf_k", "vector_weight", "text_weight"):
            value = getattr(self, name)
            if value is not None and not (value == 0 or SMALLEST <= value <= LARGEST):
                raise ValueError(
                    f"{name} must be a number of at least 0: 0 or from {SMALLEST:g} to {LARGEST:g}"
                )
        if self.vector_weight == 0 and self.text_weight == 0:
            raise ValueError("vector_weight and text_weight cannot both be 0")
        if not 1 <= self.depth <= MAX_DEPTH:
            raise ValueError(f'"depth" must be an integer from 1 to {MAX_DEPTH}, not {self.depth}')
        # Ignored by the convex fusion, so refused, as tuning with "mode": "vector" is (SQL
        # takes its default 60 from anyone: hybrid_tuning_check() says why).
        if self.rrf_k is not None and self.fusion != "rrf":
            raise ValueError("rrf_k is for fusion 'rrf': the convex one has no rank constant")
        return self

    @property
    def rank_constant(self) -> float:
        """rrf_k as hybrid_search() takes it: RRF_K unless given."""
        return RRF_K if self.rrf_k is None else self.rrf_k
