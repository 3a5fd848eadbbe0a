"""One search result, in the shape docs/http.md#post-search pins for `POST /search`, the CLI's
`--json` and the Python API alike."""

from __future__ import annotations

from typing import Any


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
