"""Raw HTTP over a socket, for the tests that send what no HTTP library would: the bytes go out
exactly as given, and the answers are parsed strictly (status line, headers, Content-Length)
so that a malformed answer fails the test instead of being smoothed over."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg.conninfo import make_conninfo

from tests.support.cluster import Cluster
from tests.support.models import MINILM, require_minilm
from tests.support.process import WorkerProcess, wait_for

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9]{2}) [^\r\n]*\r\n")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ?([^\r\n]*)\r\n")


class Malformed(AssertionError):
    """The server's answer is not well-formed HTTP/1.1."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lowercased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The reason of an error answer, which is always a JSON object with "error"."""
        if self.headers.get("content-type") != "application/json":
            raise Malformed(f"error answer {self.status} is not JSON: {self.headers}")
        found = self.json()
        if not isinstance(found, dict) or not isinstance(found.get("error"), str):
            raise Malformed(f"error answer {self.status} has no reason: {self.body[:200]!r}")
        return str(found["error"])


def read_answer(reader: BinaryIO, method: str = "GET") -> Answer | None:
    """The next final answer from `reader`, skipping 100 Continue; None at a clean EOF."""
    while True:
        line = reader.readline(8192)
        if not line:
            return None
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise Malformed(f"not a status line: {line[:200]!r}")
        status = int(match.group(1))
        headers: dict[str, str] = {}
        while (line := reader.readline(8192)) != b"\r\n":
            header = _HEADER_LINE.fullmatch(line)
            if header is None:
                raise Malformed(f"not a header line: {line[:200]!r}")
            name = header.group(1).decode().lower()
            if name in headers:
                raise Malformed(f"header {name} twice")
            headers[name] = header.group(2).decode("latin-1")
        if 100 <= status < 200:
            continue
        if method == "HEAD":
            return Answer(status, headers, b"")
        if not re.fullmatch(r"[0-9]+", headers.get("content-length", "")):
            raise Malformed(f"answer {status} without a Content-Length: {headers}")
        length = int(headers["content-length"])
        body = reader.read(length)
        if len(body) != length:
            raise Malformed(f"answer {status} ended after {len(body)} of {length} body bytes")
        return Answer(status, headers, body)


def exchange(
    port: int,
    data: bytes,
    *,
    methods: Sequence[str] = (),
    half_close: bool = True,
    timeout: float = 30,
) -> list[Answer]:
    """Sends `data`, then (with `half_close`) ends the sending side, and reads answers until the
    server closes. `methods` names the request methods in order where HEAD matters."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before reading everything: read on
            pass
        answers: list[Answer] = []
        with sock.makefile("rb") as reader:
            while True:
                method = methods[len(answers)] if len(answers) < len(methods) else "GET"
                try:
                    answer = read_answer(reader, method)
                except ConnectionResetError:
                    answer = None
                if answer is None:
                    return answers
                answers.append(answer)


def request(
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: Sequence[tuple[str, str]] = (),
    version: str = "HTTP/1.1",
) -> bytes:
    """One request's bytes: Content-Length from `body` unless `headers` say otherwise."""
    lines = [f"{method} {path} {version}", "Host: test"]
    lines += [f"{name}: {value}" for name, value in headers]
    given = {name.lower() for name, _ in headers}
    if body is not None and not given & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def rss_kib(pid: int) -> int:
    """Resident memory of process `pid` in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextmanager
def http_worker(
    cluster: Cluster, template_db: str, **env: str
) -> Iterator[tuple[WorkerProcess, str]]:
    """A worker serving HTTP on its own database, as a least-privilege role, with a watched
    table `docs` of a few embedded rows (so /search has something to find), for a whole test
    module: (the process, the database's admin dsn)."""
    worker_env = {
        "EMBED_MODEL": MINILM,
        "EMBED_MODEL_PATH": str(require_minilm().parent),
        "EMBED_THREADS": "1",
        **env,
    }
    name = cluster.create_database(template=template_db)
    dsn = cluster.dsn(name)
    role = f"embed_worker_{uuid.uuid4().hex[:8]}"
    reader = f"app_search_{uuid.uuid4().hex[:8]}"  # /search's role: the worker's reads nothing
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
        conn.execute(f"CREATE ROLE {reader} LOGIN")
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        conn.execute(f"GRANT SELECT ON docs TO {reader}")
        conn.execute("INSERT INTO docs VALUES (1, 'cats purr'), (2, 'dogs bark'), (3, 'fish swim')")
        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MINILM,))
    worker_env.setdefault("EMBED_SEARCH_DATABASE_URL", make_conninfo(dsn, user=reader))
    worker = WorkerProcess(make_conninfo(dsn, user=role), worker_env)
    try:
        worker.wait_ready()
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_for(
                lambda: conn.execute("SELECT count(embedding) FROM docs").fetchone() == (3,),
                what="the rows embedded",
            )
        yield worker, dsn
    finally:
        worker.stop()
        cluster.drop_database(name)
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"DROP ROLE IF EXISTS {reader}")
