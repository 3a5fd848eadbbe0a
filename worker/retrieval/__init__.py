"""Retrieval: the rows of a watched table nearest to a query, or for a chunked target the
documents whose best chunk is nearest, with that chunk; by meaning alone or fused with
full-text search (the retrieval step of a RAG app, docs/rag.md).

`embed-worker search` and `POST /search` both end in `search.run()`:

  request   a search as asked over HTTP (SearchRequest.parse: the body checked)
  fusion    hybrid search's tuning (rrf_k, weights, depth), checked for the CLI and HTTP alike
  targets   which target a table name (and column) means, and the target as it is now
  search    the query embedded with the target's model and ranked: run(), ranked()
  rankings  the SQL functions' calls: embeddings.search() and hybrid_search()
  results   one result's shape (docs/http.md#post-search)
  errors    a search the caller got wrong (400) or may not make (403)
"""
