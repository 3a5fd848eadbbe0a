"""A remote reranker as embeddings.rerankers registers it (sql/57_rerank.sql).

Read by each search that reranks, on the search's own connection (worker/retrieval/rerank.py),
and handed to LoadedRerankers (worker/models/reranker.py), which builds a RemoteReranker from it.
The row holds no secret: `credential` names the API key, which the Settings look up
(worker/config.py: Settings.api_key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.models.remote import rerank_providers
from worker.models.remote.spec import host_of, plain_http_problem

# For rows inserted by hand with limits left NULL (register_reranker() fills them in; the
# table's columns are NOT NULL, but a newer release's row may say less).
DEFAULT_IN_FLIGHT = 4
DEFAULT_TIMEOUT_SECONDS = 30.0  # a search waits for it: shorter than an embedding batch's 60


@dataclass(frozen=True)
class RerankerSpec:
    name: str  # our registry name, as searches and set_rerank() name it
    provider: str  # a kind of rerank_providers.py (from_row refuses any other)
    endpoint: str  # the base URL: requests go to {endpoint}/rerank
    remote_model: str | None  # the provider's model id (None: the kind sends none)
    max_documents: int  # per request
    max_tokens: int  # per passage: cut client-side to about this many tokens' characters
    max_in_flight: int
    timeout_seconds: float
    credential: str | None  # the name of the API key, never the key

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RerankerSpec:
        """The registration of an embeddings.rerankers row; ConfigError for an unknown kind."""
        kind = rerank_providers.of(row["provider"])
        return cls(
            name=row["name"],
            provider=kind.name,
            endpoint=str(row["endpoint"]).rstrip("/"),
            remote_model=row.get("remote_model"),
            max_documents=row.get("max_documents") or kind.max_documents,
            max_tokens=row.get("max_tokens") or kind.max_tokens,
            max_in_flight=row.get("max_in_flight") or DEFAULT_IN_FLIGHT,
            timeout_seconds=float(row.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
            credential=row.get("credential"),
        )

    def __post_init__(self) -> None:
        rerank_providers.of(self.provider)  # ConfigError for an unknown kind: before any request

    @property
    def kind(self) -> rerank_providers.RerankProvider:
        """How requests of this provider are made and answered."""
        return rerank_providers.of(self.provider)

    @property
    def url(self) -> str:
        """Where requests go."""
        return self.kind.url(self)

    @property
    def host(self) -> str:
        """host[:port] of the endpoint: the provider in metrics, logs and the circuit breaker
        (shared with the remote models the same host serves)."""
        return host_of(self.endpoint)

    def plain_http_problem(self) -> str | None:
        """Why the key may not go to this endpoint (None when it may): spec.plain_http_problem."""
        return plain_http_problem(self.endpoint, self.credential)

    def describe(self) -> str:
        model = f" {self.remote_model}" if self.remote_model else ""
        return f"{self.provider}{model} at {self.host}"
