"""One target's hostile files delay only that target's rows, with the default settings
(docs/documents.md#untrusted-bytes-parse-processes-and-their-budgets), against the real
`embed-worker` process.

A QA pass: with one parse process (the default then), three files of `files` that each ran into
their time budget (16 s) held it in turn, and a page inserted into `pages` a moment later was
embedded only once the first had run out (17 s): `pages` waited for `files`' parse, and its rows
rode in batches that waited for `files`' parses too. What is asserted is an order of events, not
a speed: the page is embedded while the hostile parses still run, before any of them has ended."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support import hostile_files
from tests.support.models import MINILM
from tests.support.process import WorkerProcess, wait_for

Conn = psycopg.Connection[Any]

PAGE = "<h1>Fresh</h1><p>The opening hours of the reading room, from nine to five.</p>"
# The causes of a parse that ran out of a budget (embed_worker_parse_failures_total).
BUDGET_CAUSES = ("time", "cpu", "memory", "crash")


def parse_failures(worker: WorkerProcess) -> int:
    """The parses that ran out of a budget so far, by the worker's /metrics."""
    status, body = worker.get("/metrics")
    assert status == 200
    found = re.findall(
        r'^embed_worker_parse_failures_total\{cause="(\w+)"\} (\S+)$', body.decode(), re.M
    )
    return sum(int(float(n)) for cause, n in found if cause in BUDGET_CAUSES)


def page_embedded(conn: Conn) -> bool:
    return conn.execute("SELECT EXISTS (SELECT FROM pages_chunks WHERE id = 1)").fetchone() == (
        True,
    )


def batches_of(worker: WorkerProcess, target: str) -> int:
    return sum(
        1
        for r in worker.log_records()
        if r.get("message", "").startswith("batch ") and r.get("target") == target
    )


@pytest.mark.slow
def test_a_page_of_another_target_is_embedded_while_hostile_files_are_parsed(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute("CREATE TABLE files (id int PRIMARY KEY, body bytea)")
    conn.execute("CREATE TABLE pages (id int PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('files', 'body', model => %s, chunk_tokens => 200)", (MINILM,)
    )
    conn.execute(
        "SELECT embeddings.watch('pages', 'body', model => %s, chunk_tokens => 200,"
        " format => 'html')",
        (MINILM,),
    )
    worker = start_worker()  # the parse settings' defaults
    worker.wait_ready()
    hostile = hostile_files.pdf_slow_text()
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO files VALUES (%s, %s)", [(k, hostile) for k in (1, 2, 3)])
    # Their parses asked for (a batch of theirs went through the load stage), and running.
    wait_for(lambda: batches_of(worker, "public.files.embedding"), 60, what="a batch of files")
    assert parse_failures(worker) == 0
    conn.execute("INSERT INTO pages VALUES (1, %s)", (PAGE,))

    seen: list[tuple[bool, int]] = []  # (the page embedded, hostile parses ended) at each look

    def embedded_or_ended() -> bool:
        embedded = page_embedded(conn)
        seen.append((embedded, parse_failures(worker)))  # read after: ended by the time it was
        return embedded or seen[-1][1] > 0

    wait_for(embedded_or_ended, 120, what="the page, or a hostile parse's end")
    assert seen[-1] == (True, 0), "the page waited for a parse of the hostile files"
    assert conn.execute("SELECT count(*) FROM files_chunks").fetchone() == (0,)
