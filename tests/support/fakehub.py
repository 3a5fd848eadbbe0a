"""A local HTTP server that serves model files the way the Hugging Face hub does.

`HEAD`/`GET /{repo_id}/resolve/{revision}/{path}` answer with the headers `huggingface_hub` relies
on: `X-Repo-Commit`, an `ETag` (the git blob sha1 of a small file) and, for LFS files (`.onnx`),
a 302 to a second "CDN" origin with `X-Linked-Etag` (the sha256) and `X-Linked-Size`. Unknown
repositories, revisions and files get the hub's 404s with `X-Error-Code`. A file can be served
corrupted (bytes flipped, same size) while the hub still reports the checksum of the original;
a file's transfer can fail (an HTTP status), be cut off, or crawl until `release()`.

    with FakeHub() as hub:
        hub.add("org/model", {"tokenizer.json": b"...", "onnx/model.onnx": b"..."})
        fetch.download("name", endpoint=hub.endpoint)
"""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlparse

from worker.models import catalog

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_files(model_dir: Path) -> dict[str, bytes]:
    """The files of the generated tiny model (tests/support/modelgen.py) as a hub repo holds them."""
    return {
        "config.json": (model_dir / "config.json").read_bytes(),
        "tokenizer.json": (model_dir / "tokenizer.json").read_bytes(),
        "onnx/model.onnx": (model_dir / "model.onnx").read_bytes(),
    }


def tiny_spec(
    files: dict[str, bytes],
    *,
    pin: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    int8: bool = True,
) -> catalog.ModelSpec:
    """A registry entry `tiny` for the repo "test-org/tiny" of `files`: the `pin` files carry
    their sha256, the others are verified against the hub."""
    remote = [
        catalog.RemoteFile(
            path,
            hashlib.sha256(files[path]).hexdigest() if path in pin else None,
            variant="fp32"
            if path == "onnx/model.onnx"
            else "int8"
            if "quantized" in path
            else "any",
            optional=path in optional,
        )
        for path in ("config.json", "tokenizer.json", "onnx/model.onnx", *optional)
    ]
    if int8:
        remote.append(catalog.RemoteFile("onnx/model_quantized.onnx", variant="int8"))
    return catalog.ModelSpec(
        name="tiny",
        repo_id="test-org/tiny",
        revision=COMMIT,
        dim=32,
        pooling="mean",
        max_tokens=512,
        files=tuple(remote),
        int8_file="onnx/model_quantized.onnx" if int8 else None,
        description="generated test model",
    )


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Repo:
    commit: str
    files: dict[str, bytes]
    corrupted: set[str] = field(default_factory=set)
    failing: dict[str, int] = field(default_factory=dict)  # path -> HTTP status answered
    cut: set[str] = field(default_factory=set)  # the connection closed before the content
    slow: dict[str, float] = field(default_factory=dict)  # path -> seconds its content takes


class FakeHub:
    """Two local origins: the hub endpoint, and a CDN that serves LFS content."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), in arrival order
        self._lock = threading.Lock()
        self._released = threading.Event()  # slow transfers finish at once
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._threads = [
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            for server in (self._hub, self._cdn)
        ]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, bytes], *, commit: str = COMMIT) -> None:
        self.repos[repo_id] = _Repo(commit=commit, files=dict(files))

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve `path` with flipped bytes while reporting the original's checksums."""
        self.repos[repo_id].corrupted.add(path)

    def fail(self, repo_id: str, path: str, status: int) -> None:
        """Answer every request for `path` with HTTP `status` (500, 429, ...)."""
        self.repos[repo_id].failing[path] = status

    def cut_off(self, repo_id: str, path: str) -> None:
        """Send `path`'s headers, then close the connection instead of the content."""
        self.repos[repo_id].cut.add(path)

    def crawl(self, repo_id: str, path: str, seconds: float) -> None:
        """Spread `path`'s content over `seconds` (a slow link) until release() is called."""
        self.repos[repo_id].slow[path] = seconds

    def release(self) -> None:
        """Slow transfers in progress and to come send the rest of their content at once."""
        self._released.set()

    def content_started(self, path_end: str) -> bool:
        """Whether a GET of content whose path ends with `path_end` has arrived."""
        return any(p.endswith(path_end) for p in self.downloads())

    def downloads(self) -> list[str]:
        """Paths of completed GETs of file content, hub and CDN alike."""
        with self._lock:
            return [path for method, path in self.requests if method == "GET"]

    def __enter__(self) -> FakeHub:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._released.set()  # (a crawling transfer would hold its handler thread)
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()

    # --- serving ---------------------------------------------------------------------------------

    def _served(self, repo: _Repo, path: str) -> bytes:
        data = repo.files[path]
        if path in repo.corrupted:
            return bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        return data

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

            def do_HEAD(self) -> None:
                self._respond(body=False)

            def do_GET(self) -> None:
                self._respond(body=True)

            def _respond(self, *, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                with hub._lock:
                    hub.requests.append((self.command, path))
                if path.startswith("/__cdn/"):
                    self._serve_cdn(path, body=body)
                else:
                    self._serve_resolve(path, body=body)

            def _serve_resolve(self, path: str, *, body: bool) -> None:
                repo_id, sep, rest = path.lstrip("/").partition("/resolve/")
                repo = hub.repos.get(repo_id)
                if not sep or repo is None:
                    return self._error(404, "RepoNotFound")
                revision, _, file_path = rest.partition("/")
                if revision not in (repo.commit, "main"):
                    return self._error(404, "RevisionNotFound")
                if file_path not in repo.files:
                    return self._error(404, "EntryNotFound", commit=repo.commit)
                if file_path in repo.failing:
                    return self._error(repo.failing[file_path], "Fault", commit=repo.commit)
                original = repo.files[file_path]
                if file_path.endswith(".onnx"):  # LFS: the metadata is on the redirect
                    self.send_response(302)
                    self.send_header(
                        "Location", f"{hub.cdn}/__cdn/{repo_id}/{repo.commit}/{file_path}"
                    )
                    self.send_header("X-Repo-Commit", repo.commit)
                    self.send_header("ETag", f'"{sha256(original)}"')
                    self.send_header("X-Linked-Etag", f'"{sha256(original)}"')
                    self.send_header("X-Linked-Size", str(len(original)))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                data = hub._served(repo, file_path)
                self.send_response(200)
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("ETag", f'"{git_blob_sha1(original)}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self._send(repo, file_path, data)
                return None

            def _serve_cdn(self, path: str, *, body: bool) -> None:
                parts = path.removeprefix("/__cdn/").split("/")
                repo_id, file_path = "/".join(parts[:2]), "/".join(parts[3:])
                repo = hub.repos.get(repo_id)
                if repo is None or file_path not in repo.files:
                    return self._error(404, "EntryNotFound")
                if file_path in repo.failing:
                    return self._error(repo.failing[file_path], "Fault")
                data = hub._served(repo, file_path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self._send(repo, file_path, data)
                return None

            def _send(self, repo: _Repo, file_path: str, data: bytes) -> None:
                """The content, as the file's fault says: whole, cut halfway, or crawling."""
                if file_path in repo.cut:
                    # (none of it: a client that resumes makes no progress, and gives up)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                seconds = repo.slow.get(file_path)
                if seconds is None:
                    self.wfile.write(data)
                    return
                pieces = 100
                step = max(1, -(-len(data) // pieces))
                try:
                    for start in range(0, len(data), step):
                        self.wfile.write(data[start : start + step])
                        self.wfile.flush()
                        hub._released.wait(seconds / pieces)
                except OSError:
                    self.close_connection = True  # the client went away (stopped, abandoned)

            def _error(self, status: int, code: str, *, commit: str | None = None) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
