"""Documents parsed in parse processes (worker/pipeline/parsing/): real child processes, no
database. What a parse ends as whatever it does (a document, the bytes' DocumentError, a budget's
or a crash's ParseFailed), the answer checked before it is believed, the budgets, and how the
service shares its processes between targets."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support import hostile_files as hostile
from tests.support.documents import docx_bytes, pdf_bytes
from tests.support.process import wait_for
from worker import exceptions
from worker.pipeline.documents.extracted import (
    MAX_HEADING,
    MAX_SECTIONS,
    MAX_TITLE,
    ExtractedDocument,
    Section,
)
from worker.pipeline.documents.extraction import extract
from worker.pipeline.parsing import service as services
from worker.pipeline.parsing import wire
from worker.pipeline.parsing.budgets import MIB, Budget, Budgets
from worker.pipeline.parsing.process import Outcome, Parse, ParseProcess
from worker.pipeline.parsing.service import ParseService
from worker.pipeline.pieces import DocumentId

CEILING = 16 * MIB
SMALL = Budget(seconds=2.0, cpu_seconds=1, memory_bytes=64 * MIB)


def job(data: bytes | str, format: str | None = None, budget: Budget = SMALL) -> Parse:
    if isinstance(data, str):
        return Parse(data, format, False, CEILING, budget)
    return Parse(base64.b64encode(data).decode(), format, True, CEILING, budget)


@pytest.fixture(scope="module")
def process() -> Iterator[ParseProcess]:
    found = ParseProcess()
    yield found
    found.close()


# --- what a parse ends as ---------------------------------------------------------------------
def test_a_document_parsed_in_a_process_is_the_one_parsed_here(process: ParseProcess) -> None:
    data = docx_bytes(
        [("Title", "Handbook"), ("Heading 1", "Refunds"), ("Normal", "Fourteen days.")]
    )
    parsed = process.parse(job(data))
    assert parsed == extract(data, max_bytes=CEILING)
    pdf = pdf_bytes([["Page one."], ["Page two."]], title="Two pages")
    assert process.parse(job(pdf)) == extract(pdf, max_bytes=CEILING)
    assert process.parse(job("# T\n\nbody", "markdown")) == extract(
        "# T\n\nbody", max_bytes=CEILING, format="markdown"
    )


def test_any_exception_of_a_parser_is_the_documents_error(process: ParseProcess) -> None:
    """html.parser's AssertionError, zipfile's UnicodeDecodeError in detection: the bytes'
    DocumentError (for good), and the process goes on."""
    marked = process.parse(job(hostile.html_marked_section()))
    assert isinstance(marked, exceptions.DocumentError)
    assert str(marked).startswith("html document: cannot be read (AssertionError")
    named = process.parse(job(hostile.zip_with_bad_utf8_name()))
    assert isinstance(named, exceptions.DocumentError)
    assert "UnicodeDecodeError" in str(named)
    assert isinstance(process.parse(job(b"plain text")), ExtractedDocument)


def test_a_parse_past_its_wall_time_is_killed_and_named(process: ParseProcess) -> None:
    budget = Budget(seconds=0.5, cpu_seconds=30, memory_bytes=64 * MIB)
    slow = process.parse(job(hostile.html_unclosed_quotes(), budget=budget))
    assert isinstance(slow, exceptions.ParseFailed) and slow.cause == "time"
    assert "parsing took longer than 0.5 s" in str(slow)
    assert isinstance(process.parse(job(b"after")), ExtractedDocument)  # a new process


def test_a_parse_past_its_cpu_time_is_stopped_by_the_kernel(process: ParseProcess) -> None:
    budget = Budget(seconds=60, cpu_seconds=1, memory_bytes=64 * MIB)
    busy = process.parse(job(hostile.html_unclosed_quotes(), budget=budget))
    assert isinstance(busy, exceptions.ParseFailed) and busy.cause == "cpu", busy
    assert "parsing used more than 1 s of CPU" in str(busy)


def test_a_parse_past_its_memory_is_refused_its_allocations(process: ParseProcess) -> None:
    """A DOCX of 10 million empty elements (60 MB of XML: under the archive check's floor) that
    lxml would build into a tree of gigabytes."""
    bomb = process.parse(job(hostile.docx_element_bomb(10_000_000)))
    assert isinstance(bomb, exceptions.ParseFailed) and bomb.cause == "memory", bomb
    assert str(bomb) == "document: parsing needed more than 64 MiB (EMBED_PARSE_MEMORY_MB)"
    assert isinstance(process.parse(job(b"after")), ExtractedDocument)


def test_a_parse_that_leaves_no_memory_to_spare_is_the_memory_budget_every_time(
    process: ParseProcess,
) -> None:
    """A QA pass's 25,000-page PDF (7.3 MB) failed, the same bytes, now as "parsing needed more
    than 96 MiB", now as "the parser crashed (exit status 1)": the parse left no memory to
    spare, the child's handler failed on its first allocation, before it lifted RLIMIT_AS, and
    the exception left the process (`SystemError: error return without exception set`). Half
    of these parses crashed before; each of them is the memory budget's failure now."""
    data = pdf_bytes([[f"Page {k}."] for k in range(3_000)])  # 0.9 MB, about 16 MiB to read
    budgets = range(8, 14)  # MiB: where the parse runs out differs from one to the next
    found = [process.parse(job(data, budget=Budget(30.0, 30, mib * MIB))) for mib in budgets]
    assert [str(outcome) for outcome in found] == [
        f"document: parsing needed more than {mib} MiB (EMBED_PARSE_MEMORY_MB)" for mib in budgets
    ]


def test_a_parse_process_that_dies_is_a_crash_named_by_its_signal() -> None:
    """Killed mid-parse with SIGSEGV, as a C extension's bug would: a crash, and the next parse
    has a new process."""
    process = ParseProcess()
    try:
        process.start()
        child = process._process
        assert child is not None
        budget = Budget(seconds=30, cpu_seconds=30, memory_bytes=64 * MIB)
        killer = threading.Timer(0.3, os.kill, (child.pid, signal.SIGSEGV))
        killer.start()
        crashed = process.parse(job(hostile.html_unclosed_quotes(), budget=budget))
        killer.join()
        assert isinstance(crashed, exceptions.ParseFailed) and crashed.cause == "crash"
        assert "the parser crashed (signal 11, SIGSEGV)" in str(crashed)
        assert isinstance(process.parse(job(b"after")), ExtractedDocument)
    finally:
        process.close()


def test_the_heading_over_a_long_run_of_spaces_is_a_document_within_its_budget(
    process: ParseProcess,
) -> None:
    """The 100 KB Markdown file whose heading pattern backtracked for 80 s: one pass now."""
    data = hostile.markdown_heading_then_spaces()
    budget = Budgets().for_size(len(data))
    parsed = process.parse(job(data, "markdown", budget=budget))
    assert isinstance(parsed, ExtractedDocument)
    assert parsed.title == "a b"


def test_a_parse_process_imports_no_model_no_database_and_gets_no_environment() -> None:
    found = subprocess.run(
        [
            sys.executable,
            "-P",
            "-c",
            "import sys, worker.pipeline.parsing.child; print(*sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not {"numpy", "onnxruntime", "tokenizers", "psycopg", "worker.config"} & set(found)
    process = ParseProcess()
    try:
        process.start()
        assert process._process is not None
        with open(f"/proc/{process._process.pid}/environ", "rb") as found_environment:
            variables = found_environment.read().strip(b"\0").split(b"\0")
        assert [v.split(b"=")[0] for v in variables] == [b"PYTHONPATH"]  # no DATABASE_URL
    finally:
        process.close()


# --- the budgets ------------------------------------------------------------------------------
def test_time_is_bounded_by_the_files_size_and_the_settings() -> None:
    budgets = Budgets(timeout_seconds=30, cpu_seconds=20, memory_mb=128)
    small, large = budgets.for_size(100_000), budgets.for_size(50 * MIB)
    assert 5 < small.seconds < 6 and small.cpu_seconds == 6
    assert (large.seconds, large.cpu_seconds, large.memory_bytes) == (30, 20, 128 * MIB)
    assert Budgets(timeout_seconds=0.5, cpu_seconds=1).for_size(0).seconds == 0.5


# --- the wire: nothing an answer says is believed unchecked -----------------------------------
def round_trip(document: ExtractedDocument) -> ExtractedDocument:
    header = wire.document_header(document)
    return wire.document_from(header, document.text.encode())


def test_a_document_crosses_the_wire_as_it_is() -> None:
    text = "intro\n\nA\n\nbody a\n\nB\n\nbody b"
    document = ExtractedDocument(
        "html",
        text,
        "Title",
        (
            Section((), 0, 5),
            Section(("A",), 10, 16),
            Section(("A", "B"), 21, len(text)),
        ),
        {1: (0, 16), 2: (18, len(text))},
    )
    assert round_trip(document) == document


@pytest.mark.parametrize(
    ("change", "payload"),
    [
        ({"sections": [[-1, 0, 99]]}, b"short"),  # past the text
        ({"sections": [[-1, 3, 5], [-1, 0, 2]]}, b"short"),  # out of order
        ({"sections": [[0, 0, 5]], "paths": [[0, "self"]]}, b"short"),  # a cycle
        ({"sections": [[0, 0, 5]], "paths": [[-1, "x" * (MAX_HEADING + 1)]]}, b"short"),
        ({"title": "t" * (MAX_TITLE + 1)}, b"short"),
        ({"sections": [[-1, 0, 1]] * (MAX_SECTIONS + 1)}, b"short"),
        ({"pages": [[2, 0, 1]]}, b"short"),  # not numbered from 1
        ({"format": "exe"}, b"short"),
        ({"sections": "all"}, b"short"),
        ({}, b"\xff\xfe"),  # not UTF-8
        ({"sections": []}, b"short"),
    ],
)
def test_an_answer_out_of_its_bounds_is_refused(change: wire.Header, payload: bytes) -> None:
    short = ExtractedDocument("text", "short", None, (Section((), 0, 5),))
    header = {**wire.document_header(short), **change}
    with pytest.raises(wire.WireError):
        wire.document_from(header, payload)


def test_a_frame_over_its_bound_is_refused_before_it_is_read() -> None:
    head, payload = wire.frame({"kind": "document"}, b"x" * 100)
    data = head + payload
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        position += size
        return data[position - size : position]

    with pytest.raises(wire.WireError, match="over its bound"):
        wire.read_frame(read, max_payload=99)
    assert position == wire.PREFIX.size  # nothing past the lengths


# --- the service ------------------------------------------------------------------------------
def key(target: int, name: str, digest: str = "md5") -> DocumentId:
    return ("db", target, 1, name, digest)


@pytest.fixture
def service() -> Iterator[ParseService]:
    found = ParseService()
    yield found
    found.close()


def outcome(service: ParseService, found: DocumentId, timeout: float = 60) -> Outcome:
    """The parse's outcome, waited for (a batch's wait would not wait again for a parse an
    earlier wait gave up on)."""
    result = wait_for(lambda: service.take(found), timeout, what=f"{found} parsed")
    assert result is not None
    return result


def test_a_parse_not_done_in_time_goes_on_and_its_outcome_waits_for_its_row(
    service: ParseService,
) -> None:
    slow = key(1, "slow")
    assert service.submit(slow, job(hostile.html_unclosed_quotes()), processes=1)
    service.wait([slow], time.monotonic())  # the batch's wait: over at once
    assert service.take(slow) is None
    assert service.known("db", 1, 1, ["slow"])["slow"].digest == "md5"  # not loaded again
    assert isinstance(outcome(service, slow), exceptions.ParseFailed)
    assert service.take(slow) is None  # handed out once
    assert service.known("db", 1, 1, ["slow"]) == {}


def test_one_targets_files_do_not_hold_the_processes_while_another_waits(
    service: ParseService,
) -> None:
    """Target 1 queues slow files first; target 2's document is parsed next, not after them.
    With two processes target 1 has one: target 2's is parsed while target 1's first runs."""
    hostile_jobs = [key(1, f"slow{k}") for k in range(3)]
    for found in hostile_jobs:
        service.submit(found, job(hostile.html_unclosed_quotes()), processes=2)
    other = key(2, "other")
    service.submit(other, job(b"<p>Another tenant's page.</p>", "html"), processes=2)
    assert isinstance(outcome(service, other, timeout=1.5), ExtractedDocument)
    # Target 1's three ran one after another in one process: at most the first is done.
    assert sum(service.take(found) is not None for found in hostile_jobs) <= 1


def test_targets_take_turns_with_one_process(service: ParseService) -> None:
    for k in range(3):
        service.submit(key(1, f"slow{k}"), job(hostile.html_unclosed_quotes()), processes=1)
    other = key(2, "other")
    service.submit(other, job(b"<p>Another tenant's page.</p>", "html"), processes=1)
    assert isinstance(outcome(service, other, timeout=2 * SMALL.seconds + 3), ExtractedDocument)
    assert service.take(key(1, "slow2")) is None  # its turn comes after the other target's


def test_a_changed_rows_queued_parse_is_dropped_for_the_new_one(service: ParseService) -> None:
    busy = key(1, "busy")
    service.submit(busy, job(hostile.html_unclosed_quotes()), processes=1)  # holds the process
    old, new = key(1, "row", "old"), key(1, "row", "new")
    service.submit(old, job(b"old text"), processes=1)
    service.submit(new, job(b"new text"), processes=1)
    parsed = outcome(service, new, timeout=10)
    assert isinstance(parsed, ExtractedDocument) and parsed.text == "new text"
    assert service.known("db", 1, 1, ["row"]) == {}  # the old one is forgotten


def test_a_target_queues_a_bounded_number_of_parses(service: ParseService) -> None:
    taken = [
        service.submit(key(1, f"f{k}"), job(b"x"), processes=1)
        for k in range(services.MAX_QUEUED_PER_TARGET + 5)
    ]
    assert not all(taken) and taken[0]
    assert service.submit(key(2, "other"), job(b"x"), processes=1)  # another target's is taken


def test_closing_kills_the_running_parse_and_the_next_submit_starts_again(
    service: ParseService,
) -> None:
    slow = key(1, "slow")
    long_budget = Budget(seconds=60, cpu_seconds=60, memory_bytes=64 * MIB)
    service.submit(slow, job(hostile.html_unclosed_quotes(), budget=long_budget), processes=1)
    wait_for(lambda: service._state.running[("db", 1)], 10, what="the parse to start")
    (running,) = [p._process for p in service._processes.values()]
    assert running is not None
    service.close()
    assert running.poll() == -signal.SIGKILL  # killed, not waited for
    again = key(1, "again")
    service.submit(again, job(b"text"), processes=1)
    assert isinstance(outcome(service, again), ExtractedDocument)
