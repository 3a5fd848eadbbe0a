"""A remote model as embeddings.models registers it (sql/46_providers.sql).

Read from the database with the targets (worker/pipeline/targets.py) and handed to LoadedModels,
which builds a RemoteModel from it. The row holds no secret: `credential` names the API key,
which the Settings look up (worker/config.py: Settings.api_key).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from worker import exceptions
from worker.models import catalog
from worker.models.remote import providers

# For rows inserted by hand with limits left NULL (register_model() fills them in): the
# provider kind's documented limits (providers.py), and these.
DEFAULT_IN_FLIGHT = 4
DEFAULT_TIMEOUT_SECONDS = 60.0
VARIANT = "remote"  # the variant recorded in embeddings.provenance for remote vectors


@dataclass(frozen=True)
class RemoteSpec:
    name: str  # our registry name
    provider: str  # a kind of providers.py (from_row refuses any other)
    endpoint: str  # openai: the base URL (…/v1); huggingface: the full URL
    remote_model: str  # the provider's model id
    dimensions: int
    max_tokens: int  # per input
    pooling: str  # of token-level answers (feature extraction without pooling)
    send_dimensions: bool
    max_inputs: int
    max_request_tokens: int | None
    max_in_flight: int
    timeout_seconds: float
    price_per_million_tokens: float | None
    credential: str | None  # the name of the API key, never the key
    tokenizer: str | None  # a local model name or tokenizer.json for exact token counts

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RemoteSpec:
        provider = providers.of(row["provider"])
        price = row.get("price_per_million_tokens")
        return cls(
            name=row["name"],
            provider=provider.name,
            endpoint=str(row["endpoint"]).rstrip("/"),
            remote_model=row["remote_model"],
            dimensions=int(row["dimensions"]),
            max_tokens=int(row["max_tokens"]),
            pooling=row.get("pooling") or "mean",
            send_dimensions=bool(row.get("send_dimensions")),
            max_inputs=row.get("max_inputs") or provider.max_inputs,
            max_request_tokens=row.get("max_request_tokens") or provider.max_request_tokens,
            max_in_flight=row.get("max_in_flight") or DEFAULT_IN_FLIGHT,
            timeout_seconds=float(row.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
            price_per_million_tokens=float(price) if price is not None else None,
            credential=row.get("credential"),
            tokenizer=row.get("tokenizer"),
        )

    @property
    def revision(self) -> str:
        """As embeddings_internal.remote_revision() computes it: model id @ dimensions."""
        model = re.sub(r"\s", "_", self.remote_model)
        return f"{model}@{self.dimensions}"

    @property
    def producer(self) -> str:
        """'model revision variant', as embeddings.provenance records it."""
        return f"{self.name} {self.revision} {VARIANT}"

    @property
    def url(self) -> str:
        """Where requests go."""
        return providers.of(self.provider).url(self)

    @property
    def host(self) -> str:
        """host[:port] of the endpoint: the provider in metrics, logs and the circuit breaker
        (never the path or query, which may name an account)."""
        return host_of(self.endpoint)

    def plain_http_problem(self) -> str | None:
        """Why the key may not go to this endpoint (None when it may): plain_http_problem()."""
        return plain_http_problem(self.endpoint, self.credential)

    def describe(self) -> str:
        return f"{self.provider} {self.remote_model} at {self.host}"


def host_of(endpoint: str) -> str:
    """host[:port] of an endpoint URL."""
    parts = urlsplit(endpoint)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def plain_http_problem(endpoint: str, credential: str | None) -> str | None:
    """Why the key of `credential` may not go to `endpoint` (None when it may): over plain http
    a key goes only to a loopback address written as an IP literal (127.0.0.0/8, ::1) or to the
    name `localhost` (reserved for loopback, RFC 6761, and resolved from /etc/hosts), a sidecar
    or a test server. A *name* that merely starts with 127. (127.0.0.1.nip.io) resolves wherever
    its owner says, so the address is parsed, never matched by prefix. sql/46_providers.sql
    (embeddings_internal.check_endpoint(), which register_model() and register_reranker() call)
    refuses the same endpoints."""
    parts = urlsplit(endpoint)
    if credential is None or parts.scheme.lower() != "http":
        return None
    if _loopback(parts.hostname or ""):
        return None
    return (
        f"refusing to send the API key of credential {credential!r} over plain http "
        f"to {endpoint}: plain http only to a loopback address (127.0.0.0/8 or ::1 "
        "as an IP literal, or localhost); use https, or register credential => '' for an "
        "endpoint without authentication"
    )


def _loopback(host: str) -> bool:
    """A literal loopback address, or the name localhost (urlsplit lower-cases it and takes
    IPv6's brackets off)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name, or an address spelled otherwise (127.1, 0x7f000001)
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address in _LOOPBACK_V4
    return address == _LOOPBACK_V6  # not ::ffff:127.0.0.1: IPv4-mapped is IPv4's business


_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")


def specs_of(rows: list[dict[str, Any]]) -> tuple[dict[str, RemoteSpec], dict[str, str]]:
    """The registry's remote models by name, and by name the rows this worker cannot serve
    with why (a provider kind it does not know: a newer release's row, or one set by hand).
    A row under a built-in model's name is neither (built_in_rows()): that name is the
    built-in model, for the worker as for `embed` and `model list`."""
    specs: dict[str, RemoteSpec] = {}
    refused: dict[str, str] = {}
    for row in rows:
        if row["name"] in catalog.REGISTRY:
            continue
        try:
            spec = RemoteSpec.from_row(row)
        except exceptions.ConfigError as exc:
            refused[str(row["name"])] = str(exc)
            continue
        specs[spec.name] = spec
    return specs, refused


def built_in_rows(rows: list[dict[str, Any]]) -> dict[str, str]:
    """By name, the registry's remote models under a built-in model's name (catalog.REGISTRY),
    with what is served instead (built_in_fix(): how to put the row back). register_model()
    refuses them since 0.4.0 (sql/46_providers.sql: built_in_mismatch()); an earlier release
    let it make one. Such a row is ignored: the built-in model is what its name means
    everywhere."""
    found = {}
    for row in rows:
        spec = catalog.REGISTRY.get(str(row["name"]))
        if spec is not None:
            found[spec.name] = (
                f"the registry holds {spec.name} as a remote model ({row['provider']}"
                f" {row['remote_model']}, {row['dimensions']} dimensions), but {spec.name} is a"
                f" built-in model: the worker runs the built-in {spec.name} ({spec.dim}"
                " dimensions) and ignores that row"
            )
    return found


def built_in_fix(name: str) -> str:
    """How to put back the row of built-in model `name` that built_in_rows() names."""
    spec = catalog.REGISTRY[name]
    return (
        f"SELECT embeddings.register_model('{spec.name}', {spec.dim}, provider => 'local');"
        " and register the remote model under a name of its own"
    )
