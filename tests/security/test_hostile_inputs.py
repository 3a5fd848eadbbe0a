"""The harness's hostile-input floor: a tenant's files made to hurt, against a real `embed-worker`
process that serves another tenant too (docs/documents.md#untrusted-bytes-parse-processes-and-
their-budgets).

For each format the worker parses, the hostile tenant (`roles.owner`) inserts every file of
the corpus (tests/security/hostile_inputs.py) at once, and the other tenant (`roles.tenant`)
a row and a document at the same moment. Then:
- each hostile row ends as the corpus says (failed with its cause, or done) within its budget;
- the other tenant's row and document are embedded within 5 s;
- /healthz is answered throughout;
- the worker's resident memory stays within its bound.
Small budgets and EMBED_MAX_ATTEMPTS=1 keep it fast. Then one test per defect the review found
(a page html.parser raises on, the 120 MiB-of-XML DOCX, the 100 KB Markdown file), each of which
stopped or froze the worker, or took its memory, before parsing moved out of its process."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.security.conftest import Roles
from tests.security.hostile_inputs import CORPUS, DETECTED, DONE, SHAPES, Hostile
from tests.support import hostile_files
from tests.support.models import MINILM, require_minilm
from tests.support.process import WorkerProcess, wait_for
from worker.pipeline.documents.detection import FORMATS

Conn = psycopg.Connection[Any]

MIB = 2**20
BUDGET_SECONDS = 2  # EMBED_PARSE_TIMEOUT_SECONDS of the harness's worker
BUDGETS = {
    "EMBED_PARSE_TIMEOUT_SECONDS": str(BUDGET_SECONDS),
    "EMBED_PARSE_CPU_SECONDS": "1",
    "EMBED_PARSE_MEMORY_MB": "64",
    "EMBED_PARSE_PROCESSES": "2",
    "EMBED_MAX_ATTEMPTS": "1",
    "EMBED_MAX_DOCUMENT_BYTES": str(MIB),
    # A batch embeds at most this many tokens of a target's new chunks: the other tenant's row
    # waits behind one such batch of the hostile tenant's (embedding, not parsing), short even
    # on a busy 2-core machine.
    "EMBED_PIECE_TOKENS": "512",
}
# What the worker's own process may grow by while it serves hostile files: the text and chunks
# of the documents it holds. (An in-process lxml tree of the review's DOCX took 2.7 GiB.)
RSS_GROWTH = 200 * MIB
OTHER_TENANT_SECONDS = 5.0
PAGE = b"<html><head><title>Opening hours</title></head><body><p>Open from nine.</p></body></html>"


# --- the corpus covers every parser -------------------------------------------------------------
def test_every_format_the_worker_parses_is_in_the_corpus() -> None:
    assert {h.format for h in CORPUS} == {*FORMATS, DETECTED}
    assert {h.shape for h in CORPUS} == set(SHAPES)
    for format in (*FORMATS, DETECTED):  # every format its bombs or super-linear shapes
        assert {h.shape for h in CORPUS if h.format == format} & {"bomb", "super-linear"} or (
            format == "text"  # plain text is not parsed: nothing to blow up
        ), format


# --- watching the worker ----------------------------------------------------------------------
@dataclass
class Watch:
    """/healthz polled and the worker's resident memory sampled, in a thread, until stopped."""

    worker: WorkerProcess
    unanswered: list[str] = field(default_factory=list)
    peak_rss: int = 0
    probes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_rss = max(self.peak_rss, rss(self.worker))
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.worker.url + "/healthz", timeout=2) as answer:
                    ok = answer.status == 200
            except (OSError, urllib.error.URLError) as exc:
                ok, why = False, repr(exc)
            else:
                why = "not 200"
            self.probes += 1
            if not ok:
                self.unanswered.append(f"{why} after {time.monotonic() - started:.1f} s")


def rss(worker: WorkerProcess) -> int:
    try:
        status = Path(f"/proc/{worker.proc.pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) * 1024 if found else 0


@pytest.fixture
def start(roles: Roles, model_path: str) -> Iterator[Callable[..., tuple[WorkerProcess, Watch]]]:
    require_minilm()
    started: list[tuple[WorkerProcess, Watch]] = []

    def run(**env: str) -> tuple[WorkerProcess, Watch]:
        settings = {"EMBED_MODEL": MINILM, "EMBED_MODEL_PATH": model_path, "EMBED_THREADS": "1"}
        worker = WorkerProcess(roles.worker_dsn, {**settings, "EMBED_BATCH_SIZE": "32", **env})
        worker.wait_ready()
        started.append((worker, Watch(worker)))
        return started[-1]

    yield run
    for worker, watch in started:
        watch.stop()
        worker.stop()


# --- the tenants ------------------------------------------------------------------------------
def owners_table(conn: Conn, roles: Roles, name: str, *, format: str | None) -> None:
    """A table of the hostile owner's, files in a bytea column, watched in chunks."""
    with roles.connect(roles.owner) as owner:
        owner.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body bytea)")
        owner.execute(f"GRANT SELECT, INSERT ON {name} TO {roles.writer}")
    formatted = f", format => '{format}'" if format else ""
    conn.execute(
        f"SELECT embeddings.watch('{name}', 'body', model => %s, chunk_tokens => 200{formatted})",
        (MINILM,),
    )


def insert_hostile(roles: Roles, files: dict[int, bytes]) -> None:
    """The hostile files into the owner's table `hostile` (its writer's rows), by key."""
    with roles.connect(roles.writer) as writer, writer.cursor() as cur:
        cur.executemany("INSERT INTO hostile VALUES (%s, %s)", list(files.items()))


@pytest.fixture
def other_tenant(conn: Conn, roles: Roles) -> Callable[[], Callable[[], None]]:
    """The other tenant's page table, watched; returns what inserts its row and page, and
    returns what waits (OTHER_TENANT_SECONDS at the most) until both are embedded."""
    with roles.connect(roles.tenant) as tenant:
        tenant.execute("CREATE TABLE pages (id int PRIMARY KEY, body bytea)")
    conn.execute(
        "SELECT embeddings.watch('pages', 'body', model => %s, chunk_tokens => 64)", (MINILM,)
    )

    def insert() -> Callable[[], None]:
        with roles.connect(roles.tenant) as tenant:
            tenant.execute("INSERT INTO secrets VALUES (2, 'the other tenant''s new row')")
            tenant.execute("INSERT INTO pages VALUES (1, %s)", (PAGE,))

        def embedded() -> bool:
            row = conn.execute(
                "SELECT (SELECT embedding IS NOT NULL FROM secrets WHERE id = 2),"
                " EXISTS (SELECT FROM pages_chunks WHERE id = 1)"
            ).fetchone()
            return row == (True, True)

        def wait() -> None:
            wait_for(embedded, OTHER_TENANT_SECONDS, what="the other tenant's row and document")

        return wait

    return insert


def settled(conn: Conn, table: str) -> bool:
    row = conn.execute(
        "SELECT pending_jobs FROM embeddings.status WHERE target = %s",
        (f"public.{table}.embedding",),
    ).fetchone()
    return row == (0,)


def failures(conn: Conn, table: str) -> dict[int, str]:
    rows = conn.execute(
        "SELECT row_key::int, last_error FROM embeddings.failures WHERE target = %s",
        (f"public.{table}.embedding",),
    ).fetchall()
    return dict(rows)


@dataclass
class Served:
    """A worker serving the hostile owner's table with its files in, and the other tenant's row
    and document just written."""

    worker: WorkerProcess
    watch: Watch
    baseline_rss: int  # the worker's, before the files came
    wait_for_other_tenant: Callable[[], None]

    def assert_other_tenant_served(self) -> None:
        """What the other tenant is promised: its row and document embedded (within
        OTHER_TENANT_SECONDS), and /healthz answered all along."""
        self.wait_for_other_tenant()
        assert not self.watch.unanswered, self.watch.unanswered


@pytest.fixture
def serve_hostile(
    conn: Conn,
    roles: Roles,
    start: Callable[..., tuple[WorkerProcess, Watch]],
    other_tenant: Callable[[], Callable[[], None]],
) -> Callable[..., Served]:
    """Watches the owner's table `hostile` (`format`: watch()'s, None to detect), starts a worker
    (`env` on top of the harness's), then writes `files` into the table and the other tenant's
    row and document."""

    def serve(files: dict[int, bytes], format: str | None, **env: str) -> Served:
        owners_table(conn, roles, "hostile", format=format)
        worker, watch = start(**env)
        baseline = rss(worker)
        insert_hostile(roles, files)
        return Served(worker, watch, baseline, other_tenant())

    return serve


# --- the floor --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("format", [*FORMATS, DETECTED])
def test_a_tenants_hostile_files_fail_alone_within_their_budget(
    format: str, conn: Conn, serve_hostile: Callable[..., Served]
) -> None:
    group: list[Hostile] = [h for h in CORPUS if h.format == format]
    files = {k: h.make() for k, h in enumerate(group, start=1)}
    served = serve_hostile(files, None if format == DETECTED else format, **BUDGETS)
    worker, watch, baseline = served.worker, served.watch, served.baseline_rss
    served.assert_other_tenant_served()
    # One parse process is the hostile tenant's at most: its files go one after another.
    wait_for(lambda: settled(conn, "hostile"), 60 + len(group) * BUDGET_SECONDS, what=format)
    watch.stop()
    failed = failures(conn, "hostile")
    for k, hostile in enumerate(group, start=1):
        if hostile.ends == DONE:
            assert k not in failed, f"{hostile.id}: {failed[k]}"
        else:
            assert k in failed, f"{hostile.id} did not fail"
            assert re.search(hostile.ends, failed[k]), f"{hostile.id}: {failed[k]}"
    assert worker.proc.poll() is None, worker.log_text()[-3000:]
    assert not watch.unanswered and watch.probes > 0, watch.unanswered
    assert watch.peak_rss - baseline < RSS_GROWTH, (watch.peak_rss - baseline) / MIB


# --- the defects of the review, each a test that failed before ---------------------------------
@pytest.mark.slow
def test_a_page_html_parser_raises_on_fails_alone_and_the_worker_goes_on(
    conn: Conn, serve_hostile: Callable[..., Served]
) -> None:
    """html.parser raised AssertionError on an unknown marked section, which stopped the worker
    ("internal error"); restarted, it read the same job and stopped again, forever."""
    served = serve_hostile({1: hostile_files.html_marked_section()}, None)
    worker = served.worker
    wait_for(lambda: failures(conn, "hostile") or worker.proc.poll() is not None, 30)
    assert worker.proc.poll() is None, worker.log_text()[-3000:]
    assert failures(conn, "hostile")[1].startswith(
        "html document: cannot be read (AssertionError: unknown status keyword 'foo'"
    )
    served.assert_other_tenant_served()


@pytest.mark.slow
def test_a_docx_of_120_mib_of_xml_fails_within_its_memory_budget(
    conn: Conn, serve_hostile: Callable[..., Served]
) -> None:
    """The review's 184 KB DOCX of 21 million empty elements, under the archive check's limit
    with the default ceiling: lxml's tree took the worker from 240 MiB to 2.9 GiB. Now its parse
    process is refused the memory, the row fails naming the budget, and the worker's own
    memory does not move."""
    bomb = hostile_files.docx_element_bomb()
    assert len(bomb) < 256 * 1024
    served = serve_hostile({1: bomb}, None, EMBED_MAX_ATTEMPTS="1")  # default budgets, ceiling
    watch, baseline = served.watch, served.baseline_rss
    wait_for(
        lambda: failures(conn, "hostile") or watch.peak_rss - baseline > RSS_GROWTH,
        120,
        what="the DOCX's row to fail",
    )
    watch.stop()
    assert watch.peak_rss - baseline < RSS_GROWTH, (watch.peak_rss - baseline) / MIB
    assert failures(conn, "hostile") == {
        1: "document: parsing needed more than 96 MiB (EMBED_PARSE_MEMORY_MB)"
    }
    served.assert_other_tenant_served()


@pytest.mark.slow
def test_a_heading_over_a_long_run_of_spaces_leaves_the_worker_answering(
    conn: Conn, serve_hostile: Callable[..., Served]
) -> None:
    """The review's 100 KB Markdown file: the heading pattern backtracked for 80 s holding the
    GIL, and /healthz, the keeper and every other thread stopped with it. Now it is parsed in a
    parse process, in one pass: the document is embedded and /healthz answered all along."""
    served = serve_hostile({1: hostile_files.markdown_heading_then_spaces()}, "markdown")
    worker, watch = served.worker, served.watch
    seen = watch.probes
    wait_for(lambda: watch.probes >= seen + 20 or watch.unanswered, 60, what="20 more probes")
    served.assert_other_tenant_served()
    wait_for(lambda: settled(conn, "hostile"), 60, what="the Markdown file")
    watch.stop()
    assert not watch.unanswered, watch.unanswered
    assert worker.proc.poll() is None, worker.log_text()[-3000:]
    assert failures(conn, "hostile") == {}
    assert conn.execute("SELECT count(*) > 0 FROM hostile_chunks").fetchone() == (True,)
