"""Retrieval: the rows of a watched table nearest to a query, or for a chunked target the
documents whose best chunk is nearest, with that chunk; by meaning alone or fused with
full-text search (the retrieval step of a RAG app, docs/rag.md).

`embed-worker search`, `POST /search` and Python all search through `search.SearchService`:

  request   a search as asked over HTTP (SearchRequest.parse: the body checked)
  fusion    hybrid search's tuning (rrf_k, weights, depth), checked for the CLI and HTTP alike
  search    the question embedded with the target's model, a connection leased for the SQL,
            the results reranked: SearchService, run(), ranked()
  pool      the searches' pooled connections, clean for each lease
  attempt   what one search does on one leased connection: the target checked, the ranking
  targets   which target a table name (and column) means, and the target as it is now
  rankings  the SQL functions' calls: embeddings.search() and hybrid_search()
  rerank    the rerank stage: the first ranking's top results reordered by a cross-encoder
  results   one result's shape (docs/http.md#post-search)
  errors    a search the caller got wrong (400) or may not make (403)
"""
