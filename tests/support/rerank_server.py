"""A stand-in for the remote rerank APIs: Cohere's, Jina's and Voyage's /rerank and Hugging Face
text-embeddings-inference's, each in the shape its documents give (worker/models/remote/
rerank_providers.py cites them), with the embedding stand-in's faults and key check.

`RerankServer(kind="cohere")` answers POST /v2/rerank, "jina" and "voyage" POST /v1/rerank,
"tei" POST /rerank; `base_url` is the endpoint to register. Its "model" scores a document by
word overlap with the query (`overlap()`: Jaccard similarity of their lowercase words), so a test
computes the order it must see; results are answered best first, as the hosted APIs answer
(a client must put them back in the documents' order by index).

Everything else is ProviderServer's (tests/support/provider_server.py): a request whose shape
breaks the kind's contract is answered 400 and kept in `violations`; `api_key` makes a Bearer key
required (401 otherwise); `faults` / `fault_for` / `down` inject 429 with Retry-After, 500,
timeout, reset, truncated, malformed, and these answers made wrong: wrong_count (a result
missing), dup_index (an index twice), bad_index (one out of range), nan_score (a score NaN),
shuffled (results in the documents' reverse order: valid); `concurrent`, `max_concurrent` and
`gather` record and force requests in flight together; `requests` keeps each request.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from tests.support.provider_server import ProviderServer

KINDS = ("cohere", "jina", "voyage", "tei")
_PATHS = {"cohere": "/v2", "jina": "/v1", "voyage": "/v1", "tei": ""}
_WORD = re.compile(r"[a-z0-9]+")


def overlap(query: str, document: str) -> float:
    """The stand-in's relevance score: the Jaccard similarity of the two texts' words."""
    q, d = set(_WORD.findall(query.lower())), set(_WORD.findall(document.lower()))
    return len(q & d) / len(q | d) if q | d else 0.0


class RerankServer(ProviderServer):
    CORRUPTIONS = ("wrong_count", "dup_index", "bad_index", "nan_score", "shuffled")

    def __init__(self, *, kind: str, api_key: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"no rerank kind {kind!r}: {', '.join(KINDS)}")
        super().__init__(kind=kind, api_key=api_key)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{_PATHS[self.kind]}"

    def documents(self) -> list[list[str]]:
        """The documents of each request answered, in order of arrival."""
        return [r["inputs"] for r in self.requests]

    # --- the contract -------------------------------------------------------------------------
    def _check_body(self, path: str, body: Any) -> str | None:  # noqa: PLR0911, PLR0912
        if path != f"{_PATHS[self.kind]}/rerank":
            return f"no route {path}"
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        if not isinstance(body.get("query"), str) or not body["query"]:
            return '"query" (a non-empty string) is required'
        field = "texts" if self.kind == "tei" else "documents"
        documents = body.get(field)
        if not isinstance(documents, list) or not documents:
            return f'"{field}" must be a non-empty array'
        if not all(isinstance(d, str) for d in documents):
            return f'"{field}" must hold strings'
        if self.kind == "tei":
            allowed = {
                "query",
                "texts",
                "truncate",
                "raw_scores",
                "return_text",
                "truncation_direction",
            }
            if len(documents) > 32:  # the server's --max-client-batch-size default
                return f"batch size {len(documents)} > maximum allowed batch size 32"
            for name in ("truncate", "raw_scores", "return_text"):
                if name in body and not isinstance(body[name], bool):
                    return f'"{name}" must be a boolean'
        else:
            if not isinstance(body.get("model"), str) or not body["model"]:
                return '"model" (a string) is required'
            count = "top_k" if self.kind == "voyage" else "top_n"
            allowed = {"model", "query", "documents", count}
            if self.kind in ("jina", "voyage"):
                allowed.add("return_documents")
            if self.kind == "voyage":
                allowed.add("truncation")
            if self.kind == "cohere":
                allowed.add("max_tokens_per_doc")
            given = body.get(count)
            if count in body and (
                isinstance(given, bool) or not isinstance(given, int) or given < 1
            ):
                return f'"{count}" must be a positive integer'
            if len(documents) > 1000:
                return "too many documents: at most 1000"
        extra = set(body) - allowed
        return f"unknown parameters {sorted(extra)}" if extra else None

    def _inputs(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return []
        return list(body.get("texts" if self.kind == "tei" else "documents") or [])

    def _token_refusal(self, body: Any, tokens: list[int]) -> tuple[int, Any] | None:
        return None

    def _answer(
        self, raw: bytes, body: Any, inputs: list[str], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        scores = [overlap(body["query"], d) for d in inputs]
        best = sorted(range(len(inputs)), key=lambda i: (-scores[i], i))
        field = "score" if self.kind == "tei" else "relevance_score"
        results = [{"index": i, field: scores[i]} for i in best]
        tokens = sum(self.count_tokens(t) for t in [body["query"], *inputs])
        payload: Any
        if self.kind == "cohere":
            payload = {"id": "x", "results": results, "meta": {"billed_units": {"search_units": 1}}}
        elif self.kind == "jina":
            payload = {
                "model": body["model"],
                "results": results,
                "usage": {"total_tokens": tokens},
            }
        elif self.kind == "voyage":
            payload = {
                "object": "list",
                "data": results,
                "model": body["model"],
                "usage": {"total_tokens": tokens},
            }
        else:
            payload = results
        return 200, json.dumps(payload).encode()

    def _corrupt(self, answer: bytes, fault: str) -> bytes:
        payload = json.loads(answer)
        results = (
            payload if isinstance(payload, list) else payload.get("results", payload.get("data"))
        )
        field = "score" if self.kind == "tei" else "relevance_score"
        if fault == "wrong_count":
            results.pop()
        elif fault == "dup_index":
            results[-1]["index"] = results[0]["index"]
        elif fault == "bad_index":
            results[-1]["index"] = len(results)
        elif fault == "nan_score":
            results[0][field] = math.nan  # (JSON's NaN literal, as Python's json writes it)
        elif fault == "shuffled":
            results.sort(key=lambda r: -r["index"])
        return json.dumps(payload).encode()
