"""One search result, in the shape docs/http.md#post-search pins for `POST /search`, the CLI's
`--json` and the Python API alike."""

from __future__ import annotations

import json
from typing import Any

# Key types whose values JSON carries as numbers that are not integers (to_jsonb() of a numeric,
# a real or a double precision): given as a string of their exact text, as docs/http.md's rule
# has every key but an integer one. A JSON number would be parsed as a double by most clients
# (and by Python's json, before this): 100000000000000000000.25 came back 1e+20, 1.50 as 1.5.
EXACT_TEXT_TYPES = frozenset({"numeric", "float4", "float8"})


def search_key(text: str, key_types: tuple[str, ...]) -> Any:
    """A result's key from its JSON text (the SQL functions' `key`, sql/58_search.sql), typed
    as docs/http.md#post-search says: a number with a fraction or exponent never parsed as a
    float (its text: a domain's over numeric, whose type is not known here, stays exact too),
    and a key of EXACT_TEXT_TYPES a string of its text; a composite key, each column's so."""
    value = json.loads(text, parse_float=str)
    if len(key_types) == 1:
        return _typed(value, key_types[0])
    return [_typed(part, key_type) for part, key_type in zip(value, key_types, strict=True)]


def _typed(value: Any, key_type: str) -> Any:
    if key_type in EXACT_TEXT_TYPES and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # (an integral numeric: "2", as "2.50" is a string)
    return value


def search_result(
    key: Any,
    distance: float | None,
    content: str | None,
    seq: int | None,
    *,
    score: float | None = None,
    vector_rank: int | None = None,
    text_rank: int | None = None,
    offsets: tuple[int | None, int | None] = (None, None),
    headings: list[str] | None = None,
    page: int | None = None,
) -> dict[str, Any]:
    """The row's key as the table types it; its cosine `distance` to the query and
    `similarity` (1 - distance; both null for a hybrid result the vector ranking did not
    hold); `content` (the content column's text, or the best chunk's) and `seq` (the chunk's
    position from 0; null for a whole row); the hybrid `score` (reciprocal rank fusion; null
    for a vector search) and the result's place in each ranking (`vector_rank`, `text_rank`,
    from 1; null where it is missing); `start_offset` and `end_offset`, where the chunk is in
    its document (characters from 0, the end excluded: `document[start_offset:end_offset]`
    is `content`; null for a whole row, and for a chunk written before 0.3.0 until its
    document is embedded again); a document's chunk's `headings`, its heading path (the highest
    heading first; [] under none) and `page`, the PDF page it starts on (both null for plain
    text, and `page` for other formats: docs/documents.md); `rerank_score`, the
    cross-encoder's score where the search was reranked (worker/retrieval/rerank.py; null
    otherwise), by which results are then ordered."""
    return {
        "key": key,
        "similarity": None if distance is None else 1 - float(distance),
        "distance": None if distance is None else float(distance),
        "content": content,
        "seq": seq,
        "score": score,
        "vector_rank": vector_rank,
        "text_rank": text_rank,
        "start_offset": offsets[0],
        "end_offset": offsets[1],
        "headings": headings,
        "page": page,
        "rerank_score": None,
    }
