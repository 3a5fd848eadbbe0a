"""A stand-in for a remote embedding provider, or a fault-injecting proxy in front of a real one.

`ProviderServer(kind="openai")` answers POST /v1/embeddings as OpenAI's API reference documents
it; `kind="huggingface"` answers POST /models/<id> as the Inference API's feature extraction
does. With `upstream`, requests are forwarded to a real server (infinity in the tests) and its
answers passed back. Either way each request may be given a fault first:

  429        rate limited, with Retry-After (`retry_after` seconds)
  500        a server error; `down = True` answers every request so
  loading    Hugging Face's 503 {"error": "... is currently loading", "estimated_time": s}
  timeout    no answer for `stall_seconds` (longer than the client's timeout)
  reset      the connection closed without an answer
  truncated  a 200 whose body stops halfway (Content-Length says more)
  malformed  a 200 whose body is not JSON
  wrong_dims vectors one element short
  wrong_count one vector missing
  dup_index  two vectors claiming the same index
  shuffled   the data in reverse order, indexes intact (valid: the client must reorder)

Faults are taken from `faults` (a list, consumed in order, one per request) or chosen by
`fault_for(inputs)`; `model_faults` gives one to every request naming a model (OpenAI's
`model`): one model of a shared gateway failing while the others answer.

Token limits are enforced as the APIs do when set: `max_input_tokens` per input (OpenAI: 400
"This model's maximum context length is N tokens, however you requested M tokens ...";
Hugging Face/text-embeddings-inference: 413 "Input validation error: `inputs` must have less
than N tokens. Given: M", unless the request says "truncate": true, when the server cuts it
itself) and `max_request_tokens` summed over an OpenAI request (400 "Requested M tokens, max
N tokens per request", type and code max_tokens_per_request). Tokens are counted by
`count_tokens` (default: one per 4 characters; a real tokenizer in the tests of cutting); each
request's counts are recorded with it, and every refusal for tokens in `token_refusals`.

Inputs containing "POISON" are refused with a 400 (the input's fault),
inputs containing "NANVEC" get a NaN vector. The request shapes are checked against the
documented contract: violations are answered 400 and kept in `violations`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import numpy as np

OPENAI_MAX_INPUTS = 2048  # the API reference: "any array must be 2048 dimensions or less"


def fake_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for `text` (the stand-in's 'model')."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dims)
    return [float(x) for x in v / np.linalg.norm(v)]


class ProviderServer:
    # The faults that answer 200 with a body made wrong by _corrupt().
    CORRUPTIONS: tuple[str, ...] = ("wrong_dims", "wrong_count", "dup_index", "shuffled")

    def __init__(
        self,
        *,
        kind: str = "openai",
        dims: int = 8,
        upstream: str | None = None,
        api_key: str | None = None,
        token_level: bool = False,
    ) -> None:
        self.kind = kind
        self.dims = dims
        self.upstream = upstream
        self.api_key = api_key
        self.token_level = token_level  # huggingface: token vectors, unpooled
        self.faults: list[str | None] = []  # None: this request answered well
        self.fault_for: Callable[[list[str]], str | None] | None = None
        self.model_faults: dict[str, str] = {}  # the request's "model" -> its fault
        self.down = False
        self.retry_after = 1.0
        self.stall_seconds = 3.0
        self.echo_key_in_errors = False
        self.pad_bytes = 0  # good answers padded with this much whitespace (still valid JSON)
        self.max_input_tokens: int | None = None
        self.max_request_tokens: int | None = None
        self.count_tokens: Callable[[str], int] = lambda text: max(len(text) // 4, 1)
        self.token_refusals: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.faults_served: dict[str, int] = {}
        self.violations: list[str] = []
        self.concurrent = 0
        self.max_concurrent = 0
        # Requests are held until `gather` of them are in flight together (once), or for
        # gather_seconds: a test of concurrency then does not depend on how fast each is.
        self.gather = 0
        self.gather_seconds = 3.0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The endpoint to register: OpenAI's base URL (…/v1), or the feature-extraction URL."""
        if self.kind == "openai":
            return f"http://127.0.0.1:{self.port}/v1"
        return f"http://127.0.0.1:{self.port}/models/test-org/test-model"

    # --- behaviour ----------------------------------------------------------------------------
    def _next_fault(self, inputs: list[str], model: Any = None) -> str | None:
        with self._lock:
            if self.down:
                return "500"
            if isinstance(model, str) and model in self.model_faults:
                return self.model_faults[model]
            if self.faults:
                return self.faults.pop(0)
        if self.fault_for is not None:
            return self.fault_for(inputs)
        return None

    def _record(self, fault: str | None, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if fault:
                self.faults_served[fault] = self.faults_served.get(fault, 0) + 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                with server._arrived:
                    server.concurrent += 1
                    server.max_concurrent = max(server.max_concurrent, server.concurrent)
                    server._arrived.notify_all()
                    server._arrived.wait_for(
                        lambda: server.max_concurrent >= server.gather,
                        timeout=server.gather_seconds,
                    )
                try:
                    self._post()
                finally:
                    with server._lock:
                        server.concurrent -= 1

            def _post(self) -> None:  # noqa: PLR0911, PLR0912 - one branch per fault
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._json(400, {"error": {"message": "body is not JSON"}})
                problem = server._check_request(self.path, dict(self.headers.items()), body)
                inputs = server._inputs(body)
                auth = self.headers.get("Authorization")
                if problem == "unauthorized":
                    message = "Incorrect API key provided"
                    if server.echo_key_in_errors and auth:
                        message += f": {auth.removeprefix('Bearer ')}"
                    server._record("401", {"inputs": inputs, "authorization": auth})
                    return self._json(401, {"error": {"message": message, "type": "auth"}})
                if problem is not None:
                    server.violations.append(problem)
                    return self._json(400, {"error": {"message": problem}})
                tokens = [server.count_tokens(t) for t in inputs]
                refusal = server._token_refusal(body, tokens)
                if refusal is not None:
                    status, error = refusal
                    server.token_refusals.append(json.dumps(error))
                    return self._json(status, error)
                fault = server._next_fault(inputs, body.get("model"))
                server._record(
                    fault, {"inputs": inputs, "authorization": auth, "body": body, "tokens": tokens}
                )
                if any("POISON" in t for t in inputs):
                    message = "Invalid input: POISON is not allowed"
                    if server.echo_key_in_errors and auth:
                        message += f" (request by {auth.removeprefix('Bearer ')})"
                    return self._json(400, {"error": {"message": message}})
                if fault == "429":
                    return self._json(
                        429,
                        {"error": {"message": "Rate limit reached", "type": "requests"}},
                        {"Retry-After": f"{server.retry_after:g}"},
                    )
                if fault == "500":
                    return self._json(500, {"error": {"message": "the server had an error"}})
                if fault == "loading":
                    return self._json(
                        503,
                        {
                            "error": "Model test-org/test-model is currently loading",
                            "estimated_time": server.retry_after,
                        },
                    )
                if fault == "timeout":
                    time.sleep(server.stall_seconds)
                if fault == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return None
                status, answer = server._answer(raw, body, inputs, dict(self.headers.items()))
                if status != 200:
                    return self._raw(status, answer)
                if fault == "malformed":
                    return self._raw(200, b'{"object": "list", "data": [{"embedding": [0.1,')
                if fault == "truncated":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer[: len(answer) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.close()
                    return None
                if fault in server.CORRUPTIONS:
                    answer = server._corrupt(answer, fault)
                return self._raw(200, answer + b" " * server.pad_bytes)

            def _json(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                self._raw(status, json.dumps(payload).encode(), headers)

            def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    # --- the contract -------------------------------------------------------------------------
    def _check_request(self, path: str, headers: dict[str, str], body: Any) -> str | None:
        """The documented request shape (module docstring of worker/models/remote/protocol.py
        cites the documents); "unauthorized" when a key is expected and missing or wrong."""
        lowered = {k.lower(): v for k, v in headers.items()}
        if self.api_key is not None and lowered.get("authorization") != f"Bearer {self.api_key}":
            return "unauthorized"
        if not lowered.get("content-type", "").startswith("application/json"):
            return "Content-Type must be application/json"
        return self._check_body(path, body)

    def _check_body(self, path: str, body: Any) -> str | None:  # noqa: PLR0911, PLR0912
        """The kind's body, one check per documented rule."""
        if self.kind == "openai":
            if not path.endswith("/embeddings"):
                return f"no route {path}"
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                return '"model" (a string) is required'
            given = body.get("input")
            texts = [given] if isinstance(given, str) else given
            if (
                not isinstance(texts, list)
                or not texts
                or not all(isinstance(t, str) for t in texts)
            ):
                return '"input" must be a string or a non-empty array of strings'
            if len(texts) > OPENAI_MAX_INPUTS:
                return f"'$.input' must have at most {OPENAI_MAX_INPUTS} items"
            if any(t == "" for t in texts):
                return "'$.input' cannot contain an empty string"
            if body.get("encoding_format", "float") not in ("float", "base64"):
                return '"encoding_format" must be float or base64'
            if "dimensions" in body and (
                not isinstance(body["dimensions"], int) or body["dimensions"] < 1
            ):
                return '"dimensions" must be a positive integer'
            extra = set(body) - {"model", "input", "encoding_format", "dimensions", "user"}
            return f"unknown parameters {sorted(extra)}" if extra else None
        if not isinstance(body, dict) or "inputs" not in body:
            return '"inputs" is required'
        given = body["inputs"]
        if not (
            isinstance(given, str)
            or (isinstance(given, list) and all(isinstance(t, str) for t in given))
        ):
            return '"inputs" must be a string or an array of strings'
        extra = set(body) - {
            "inputs",
            "normalize",
            "prompt_name",
            "truncate",
            "truncation_direction",
        }
        if extra:
            return f"unknown parameters {sorted(extra)}"
        for name in ("normalize", "truncate"):
            if name in body and not isinstance(body[name], bool):
                return f'"{name}" must be a boolean'
        return None

    def _token_refusal(self, body: Any, tokens: list[int]) -> tuple[int, Any] | None:
        """The provider's refusal of a request over its token limits, in its error shape."""
        longest = max(tokens, default=0)
        limit = self.max_input_tokens
        if self.kind == "openai":
            if limit is not None and longest > limit:
                message = (
                    f"This model's maximum context length is {limit} tokens, however you "
                    f"requested {longest} tokens ({longest} in your prompt; 0 for the "
                    "completion). Please reduce your prompt; or completion length."
                )
                error = {"message": message, "type": "invalid_request_error"}
                return 400, {"error": {**error, "param": None, "code": None}}
            total = sum(tokens)
            if self.max_request_tokens is not None and total > self.max_request_tokens:
                message = (
                    f"Requested {total} tokens, max {self.max_request_tokens} tokens per request"
                )
                kind = "max_tokens_per_request"
                return 400, {
                    "error": {"message": message, "type": kind, "param": None, "code": kind}
                }
            return None
        if limit is not None and longest > limit and body.get("truncate") is not True:
            message = f"Input validation error: `inputs` must have less than {limit} tokens. Given: {longest}"
            return 413, {"error": message, "error_type": "Validation"}
        return None

    def _inputs(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return []
        given = body.get("input", body.get("inputs"))
        return [given] if isinstance(given, str) else list(given or [])

    def _answer(
        self, raw: bytes, body: Any, inputs: list[str], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self.upstream is not None:
            forward = {
                k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type")
            }
            request = urllib.request.Request(
                self.upstream, data=raw, headers=forward, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()
        vectors = [
            [math.nan, *fake_vector(t, self.dims)[1:]]
            if "NANVEC" in t
            else fake_vector(t, self.dims)
            for t in inputs
        ]
        if self.kind == "openai":
            dims = body.get("dimensions")
            if isinstance(dims, int):
                vectors = [v[:dims] for v in vectors]
            tokens = sum(self.count_tokens(t) for t in inputs)
            payload: Any = {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": v}
                    for i, v in enumerate(vectors)
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        elif self.token_level:  # unpooled: three token vectors per input, their mean the vector
            payload = [[v, v, v] for v in vectors]
        else:
            payload = vectors if isinstance(body["inputs"], list) else vectors[0]
        return 200, json.dumps(payload).encode()

    def _corrupt(self, answer: bytes, fault: str) -> bytes:
        payload = json.loads(answer)
        data = payload["data"] if isinstance(payload, dict) else payload
        if fault == "wrong_dims":
            for item in data:
                vector = item["embedding"] if isinstance(item, dict) else item
                vector.pop()
        elif fault == "wrong_count":
            data.pop()
        elif fault == "dup_index" and isinstance(payload, dict) and len(data) > 1:
            data[-1]["index"] = 0
        elif fault == "dup_index":
            data.pop()
        elif fault == "shuffled" and isinstance(payload, dict):
            data.reverse()
        return json.dumps(payload).encode()
