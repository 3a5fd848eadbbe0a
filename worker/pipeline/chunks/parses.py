"""The load stage's parses: before any target's documents are read, the parse of every document of
the batch is asked for, and the batch waits once, a short while (PARSE_WAIT_SECONDS), for them
(docs/documents.md#untrusted-bytes-parse-processes-and-their-budgets). A document not parsed by
then is postponed (re-queued, no attempt counted) while its parse goes on in a parse process,
and does not hold up the rest of the batch.

All asked for first, no target's parse waits for another target's wait. And a parse that an
earlier batch already waited for (a slow one: a large file, or a hostile one running into its
budget) holds up a batch only when the batch has nothing else to do: another target's rows,
plain or parsed, ride in a batch with a slow file's row without waiting for it. (The wait of a
batch with nothing else is what paces the re-reads of a row whose parse goes on: its job comes
back at once, and `run --once` goes on while it does.)"""

from __future__ import annotations

import time

from worker import db
from worker.pipeline import pieces
from worker.pipeline.batch import Batch, Row
from worker.pipeline.chunks.documents import parse_for
from worker.pipeline.parsing.service import SERVICE, ParseService
from worker.pipeline.pieces import DocumentId
from worker.target import Target

# How long a batch waits for its documents' parses.
PARSE_WAIT_SECONDS = 1.0


def ask(
    conn: db.Connection,
    batch: Batch,
    groups: dict[Target, list[Row]],
    parser: ParseService = SERVICE,
) -> None:
    """Asks for the parse of each loaded row's document that needs one (not of a long document's
    next piece: the cache holds it parsed), every target's, then waits for them. Rows past the
    batch's budget are asked for too: parsed meanwhile, they are ready when they come back."""
    asked: list[DocumentId] = []
    busy = False  # rows ready without a parse: the batch has other work
    for target, rows in groups.items():
        for row in rows:
            assert row.content is not None and row.digest is not None
            job = parse_for(target, batch.limits, row.content)
            if job is None:
                busy = True
                continue
            key = pieces.document_id(conn, target.id, target.version, row.key, row.digest)
            if pieces.CACHE.holds(key):
                busy = True
                continue
            parser.submit(key, job, processes=batch.limits.parsing.processes)
            asked.append(key)
    if asked:
        parser.wait(asked, time.monotonic() + PARSE_WAIT_SECONDS, busy=busy)
