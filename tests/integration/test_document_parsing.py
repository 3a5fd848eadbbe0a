"""Documents parsed in parse processes (worker/pipeline/parsing/, docs/documents.md#untrusted-
bytes-parse-processes-and-their-budgets), through the whole pipeline: what a row becomes when
its parse raises, runs past a budget, or is not done within the batch's wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.test_document_targets import chunk_rows, files
from tests.support import hostile_files as hostile
from worker import metrics
from worker.pipeline.chunks import parses
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

__all__ = ["files"]


def failures(conn: Conn) -> dict[int, tuple[int, str]]:
    rows = conn.execute(
        "SELECT row_key::bigint, attempts, last_error FROM embeddings.failures"
    ).fetchall()
    return {key: (attempts, error) for key, attempts, error in rows}


def test_a_file_a_parser_raises_anything_on_fails_alone_for_good(
    conn: Conn, files: dict[int, bytes], run_once: Callable[..., Worker]
) -> None:
    """html.parser's AssertionError and zipfile's UnicodeDecodeError (in format detection) once
    stopped the worker for good; now each is its row's DocumentError, dead at once."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO files VALUES (%s, 'hostile', %s)",
            [(10, hostile.html_marked_section()), (11, hostile.zip_with_bad_utf8_name())],
        )
    run_once()
    found = failures(conn)
    assert sorted(found) == [10, 11]
    assert found[10][0] == 1 and found[10][1].startswith(
        "html document: cannot be read (AssertionError: unknown status keyword 'foo'"
    )
    assert found[11][0] == 1 and "(UnicodeDecodeError:" in found[11][1]
    assert {r["id"] for r in chunk_rows(conn)} == {1, 2, 3, 4, 5}


def test_a_parse_past_its_budget_fails_its_attempt_then_is_dead_lettered(
    conn: Conn, files: dict[int, bytes], run_once: Callable[..., Worker]
) -> None:
    """A budget may have been hit because the machine was busy: the row is retried like any
    failed row, and dead-lettered with the cause after EMBED_MAX_ATTEMPTS."""
    conn.execute("INSERT INTO files VALUES (10, 'slow', %s)", (hostile.html_unclosed_quotes(),))
    timeouts = metrics.PARSE_FAILURES.labels("time")._value.get()
    run_once(max_attempts=2, parse_timeout_seconds=0.5, parse_cpu_seconds=30)
    attempts, error = failures(conn)[10]
    assert attempts == 2
    assert error == (
        "document: parsing took longer than 0.5 s, the budget of its 234 KiB "
        "(EMBED_PARSE_TIMEOUT_SECONDS)"
    )
    assert metrics.PARSE_FAILURES.labels("time")._value.get() == timeouts + 2
    status = conn.execute(
        "SELECT failed_jobs FROM embeddings.status WHERE target = 'public.files.embedding'"
    ).fetchone()
    assert status == (1,)
    assert {r["id"] for r in chunk_rows(conn)} == {1, 2, 3, 4, 5}


def test_a_file_not_parsed_within_the_batchs_wait_comes_back_without_an_attempt(
    conn: Conn,
    files: dict[int, bytes],
    run_once: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no wait at all, no parse is ever done within its batch: every file is postponed
    while its parse goes on, and embedded when its job comes back for the outcome."""
    monkeypatch.setattr(parses, "PARSE_WAIT_SECONDS", 0.0)
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes VALUES (1, 'A plain row of another table.')")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => 'all-MiniLM-L6-v2')")
    run_once(max_attempts=1)
    assert failures(conn) == {}
    assert {r["id"] for r in chunk_rows(conn)} == {1, 2, 3, 4, 5}
    assert conn.execute("SELECT embedding IS NOT NULL FROM notes").fetchone() == (True,)


def test_a_zip_bomb_fails_for_good_naming_the_bound_it_inflates_past(
    conn: Conn, files: dict[int, bytes], run_once: Callable[..., Worker]
) -> None:
    """Its text was never read: not a document over the ceiling (a QA pass: recorded so, and
    status's fix said to raise EMBED_MAX_DOCUMENT_BYTES, which cannot make it parse)."""
    conn.execute("INSERT INTO files VALUES (10, 'bomb', %s)", (hostile.docx_zip_bomb(),))
    run_once()
    attempts, error = failures(conn)[10]
    assert attempts == 1
    assert error.startswith("docx document: its parts would inflate to ")
    assert "more than the 134,217,728 a DOCX may inflate to (8 per byte of text" in error
    assert "refused unread, as a zip bomb" in error and "raise" not in error
    assert conn.execute("SELECT count(*) FROM embeddings.documents").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM embeddings.stopped").fetchone() == (0,)
