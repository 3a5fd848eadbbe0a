"""Retrieval quality: recall@10 and nDCG@10 of full-text, vector and hybrid search over the
standard library's documentation (`python -m bench --only quality`, docs/retrieval-quality.md).

stdlib     the corpus: documented objects as rows, module pages to split into chunks
generate   writes exact.json: exact-term queries from the source's structure
labels     the query files and how a label on an object lands on a row or a chunk
metrics    recall@k and nDCG@k
retrievers full-text, vector, reciprocal rank fusion, and any SQL search function
evaluate   the section: build, embed, load into Postgres, search, score
summary    means, paired differences, the Markdown of the report
"""
