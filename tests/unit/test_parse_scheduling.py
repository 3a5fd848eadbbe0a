"""How the parse service shares its processes (worker/pipeline/parsing/service.py): between
targets (a database's target is a tenant), between a document's first parse and the retries of
one that ran out of its budget (suspects), and how long a batch's wait holds it. Real parse
processes where a parse must run; the choice of the next parse on its own where it need not."""

from __future__ import annotations

import base64
import time
from collections import deque
from collections.abc import Iterator

import pytest

from tests.support import hostile_files as hostile
from tests.support.process import wait_for
from worker import exceptions
from worker.pipeline.documents.extracted import ExtractedDocument
from worker.pipeline.parsing import service as services
from worker.pipeline.parsing.budgets import MIB, Budget
from worker.pipeline.parsing.process import Outcome, Parse
from worker.pipeline.parsing.service import ParseService
from worker.pipeline.pieces import DocumentId

SMALL = Budget(seconds=2.0, cpu_seconds=2, memory_bytes=64 * MIB)
LONG = Budget(seconds=60.0, cpu_seconds=60, memory_bytes=64 * MIB)


def job(data: bytes, budget: Budget = SMALL) -> Parse:
    return Parse(base64.b64encode(data).decode(), None, True, 16 * MIB, budget)


def key(target: int, name: str, database: str = "db") -> DocumentId:
    return (database, target, 1, name, "md5")


SLOW = hostile.html_unclosed_quotes()  # runs into a budget of seconds
PAGE = b"<p>Another tenant's page.</p>"


@pytest.fixture
def service() -> Iterator[ParseService]:
    found = ParseService()
    yield found
    found.close()


def outcome(service: ParseService, found: DocumentId, timeout: float) -> Outcome:
    result = wait_for(lambda: service.take(found), timeout, what=f"{found} parsed")
    assert result is not None
    return result


def running(service: ParseService, found: DocumentId) -> bool:
    entry = service._state.entries.get(found)
    return entry is not None and entry.running


# --- tenants ------------------------------------------------------------------------------------
def test_the_same_target_id_in_two_databases_is_two_tenants(service: ParseService) -> None:
    """One worker serves several databases, each numbering its targets from 1: target 1 of
    one database and target 1 of another were one tenant, the second's page behind the
    first's slow files (no other process was free to it)."""
    for k in range(2):
        service.submit(key(1, f"slow{k}", "a"), job(SLOW, LONG), processes=2)
    wait_for(lambda: running(service, key(1, "slow0", "a")), 10, what="the slow parse")
    page = key(1, "page", "b")
    service.submit(page, job(PAGE), processes=2)
    assert isinstance(outcome(service, page, timeout=20), ExtractedDocument)
    assert running(service, key(1, "slow0", "a"))  # the page did not wait for it


# --- suspects: retries of a parse that ran out of its budget ------------------------------------
def test_a_document_whose_parse_ran_out_of_its_budget_is_a_suspect(
    service: ParseService,
) -> None:
    slow, page = key(1, "slow"), key(1, "page")
    service.submit(slow, job(SLOW, Budget(0.5, 1, 64 * MIB)), processes=1)
    assert isinstance(outcome(service, slow, timeout=30), exceptions.ParseFailed)
    service.submit(page, job(PAGE), processes=1)
    assert isinstance(outcome(service, page, timeout=30), ExtractedDocument)
    assert list(service._state.suspects) == [slow]  # the page is not one
    service.submit(slow, job(SLOW), processes=1)  # its retry
    assert service._state.entries[slow].suspect


def entry(target: int, name: str, *, suspect: bool = False, due: float = 0.0) -> services._Entry:
    return services._Entry(key(target, name), job(PAGE), suspect=suspect, due=due)


def state_of(*entries: services._Entry) -> services._State:
    state = services._State()
    for found in entries:
        state.entries[found.key] = found
        state.queues.setdefault(found.tenant, deque()).append(found)
    return state


def test_a_suspects_retry_waits_behind_a_new_document_of_its_target_asked_for_after_it() -> None:
    """The QA pass's Markdown file waited 66 s behind two files' retries, each running into its
    budget again: a retry now comes after the documents asked for within its budget's time."""
    later = time.monotonic() + 60
    retry, fresh = entry(1, "retry", suspect=True, due=later), entry(1, "markdown")
    state = state_of(retry, fresh)
    assert services._pick(state, cap=1) is fresh


def test_a_suspects_retry_runs_when_due_or_when_nothing_else_would() -> None:
    now = time.monotonic()
    idle = state_of(entry(1, "retry", suspect=True, due=now + 60))
    assert services._pick(idle, cap=1) is not None  # a process left idle serves no one
    due = entry(1, "due", suspect=True, due=now - 1)
    assert services._pick(state_of(due, entry(1, "fresh", due=now)), cap=1) is due


def test_suspects_never_hold_every_process() -> None:
    """With two processes, one suspect's retry runs at a time, whatever the targets: another
    target's first parse always finds a process."""
    now = time.monotonic()
    state = state_of(
        entry(1, "retry", suspect=True, due=now - 2), entry(2, "retry", suspect=True, due=now - 1)
    )
    first = services._pick(state, cap=1)
    assert first is not None and first.key[1] == 1
    assert services._pick(state, cap=1) is None  # target 2's retry waits for the lane
    fresh = entry(3, "page", due=now)
    state.queues.setdefault(fresh.tenant, deque()).append(fresh)
    assert services._pick(state, cap=1) is fresh


# --- the batch's wait ---------------------------------------------------------------------------
def test_a_parse_an_earlier_wait_gave_up_on_holds_up_only_a_wait_with_nothing_else(
    service: ParseService,
) -> None:
    """A slow parse held up every batch its row rode in, a second each, and another target's
    rows in it. Waited for once, it holds up only a batch with nothing else to do (the pace of
    its row's re-reads): not one whose other rows are ready (`busy`), nor one with a parse done."""
    slow, page = key(1, "slow"), key(2, "page")
    service.submit(slow, job(SLOW, LONG), processes=2)
    wait_for(lambda: running(service, slow), 10, what="the slow parse")
    service.wait([slow], time.monotonic() + 0.2)  # the first batch's wait: given up on
    service.wait([slow], time.monotonic() + 60, busy=True)
    service.submit(page, job(PAGE), processes=2)
    service.wait([slow, page], time.monotonic() + 60)  # ends with the page's parse
    assert isinstance(service.take(page), ExtractedDocument)
    assert running(service, slow)  # neither waited for it to end
    started = time.monotonic()
    service.wait([slow], started + 0.3)  # nothing else: the batch waits
    assert time.monotonic() - started >= 0.3 and running(service, slow)
