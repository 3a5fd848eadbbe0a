"""How each job of a batch is settled from its rows' outcomes (worker.pipeline.settle)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from tests.support.factories import job, target
from worker.config import Settings
from worker.pipeline import settlement, stages
from worker.pipeline.batch import Batch, Fate, RowState

SETTINGS = Settings(max_attempts=3, backoff_base_seconds=10, backoff_max_seconds=100)
NOW = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


def batch_with(*jobs_and_states: tuple[object, dict[str, RowState]]) -> Batch:
    jobs = [j for j, _ in jobs_and_states]
    batch = Batch(jobs=jobs)  # type: ignore[arg-type]
    stages.prepare(batch)
    for j, states in jobs_and_states:
        for key, state in states.items():
            row = batch.rows[(j.target.id, key)]  # type: ignore[attr-defined]
            row.state = state
            if state is RowState.FAILED:
                row.error = f"boom {key}"
    return batch


T = {1: target()}
W, F, G = RowState.WRITTEN, RowState.FAILED, RowState.GONE


def test_a_job_whose_rows_all_succeeded_is_deleted() -> None:
    j = job({"target": 1, "keys": [1, 2, 3]}, T)
    out = settlement.settle(batch_with((j, {"1": W, "2": G, "3": RowState.STALE})), SETTINGS, NOW)
    assert out.delete == [1] and not (out.retry or out.resend or out.dead or out.archive)
    assert out.latencies == [5.0]


def test_a_wholly_failed_job_backs_off_as_it_is() -> None:
    j = job({"target": 1, "keys": [1, 2]}, T, read_ct=2)
    out = settlement.settle(batch_with((j, {"1": F, "2": F})), SETTINGS, NOW)
    assert list(out.retry) == [1]
    assert 16 <= out.retry[1] <= 24  # second attempt: 2 x 10 s, jittered
    assert out.errors == {1: "boom 1"}  # carried by the job it backs off (for `status`)
    assert not (out.delete or out.resend or out.dead)


def test_a_partly_failed_job_resends_only_the_failed_keys_with_its_attempts() -> None:
    j = job({"target": 1, "keys": [1, 2, 3]}, T, read_ct=1)
    out = settlement.settle(batch_with((j, {"1": W, "2": F, "3": W})), SETTINGS, NOW)
    assert out.delete == [1]
    assert [m for m, _ in out.resend] == [
        {"target": 1, "keys": [2], "attempts": 1, "last_error": "boom 2"}
    ]
    assert not out.dead


def test_exhausted_rows_are_dead_lettered_one_by_one() -> None:
    j = job({"target": 1, "keys": [1, 2, 3], "attempts": 2}, T, read_ct=1)
    out = settlement.settle(batch_with((j, {"1": W, "2": F, "3": F})), SETTINGS, NOW)
    assert out.archive == [1] and not out.resend and not out.retry
    assert [(d.row_key, d.message, d.attempts, d.error) for d in out.dead] == [
        (2, {"target": 1, "keys": [2]}, 3, "boom 2"),
        (3, {"target": 1, "keys": [3]}, 3, "boom 3"),
    ]
    # Its row 1 was stored: the job is done (`done` missed it, and EmbedWorkerStalled paged
    # while rows were embedded).
    assert out.done == [1]


def test_a_job_is_done_when_any_of_its_rows_was_settled() -> None:
    whole, partial, lost = (
        job({"target": 1, "keys": keys, "attempts": 2}, T, msg_id=m)
        for m, keys in ((1, [1, 2]), (2, [3, 4]), (3, [5, 6]))
    )
    out = settlement.settle(
        batch_with(
            (whole, {"1": W, "2": G}), (partial, {"3": W, "4": F}), (lost, {"5": F, "6": F})
        ),
        SETTINGS,
        NOW,
    )
    assert out.done == [1, 2]  # the job all of whose rows were dead-lettered did nothing
    assert out.archive == [2, 3] and len(out.dead) == 3


def test_invalid_keys_are_dead_at_once_and_the_rest_proceeds() -> None:
    j = job({"target": 1, "keys": [1, "not a number"]}, T)
    out = settlement.settle(batch_with((j, {"1": W})), SETTINGS, NOW)
    assert out.archive == [1]
    assert [d.row_key for d in out.dead] == ["not a number"]


def test_unknown_targets_are_dead_lettered_without_running_anything() -> None:
    j = job({"id": 5, "schema": "public", "table": "secret", "contentFunction": "f"}, T)
    out = settlement.settle(batch_with((j, {})), SETTINGS, NOW)
    assert out.archive == [1]
    (dead,) = out.dead
    assert dead.target is None and dead.target_label == "public.secret.embedding"
    assert dead.row_key == 5 and "embeddings.watch" in dead.error


def test_an_unknown_tables_dead_letter_names_it_quoted_where_sql_must() -> None:
    """Two tables whose names join alike unquoted (`"a.b".c`, `a."b.c"`) are two labels."""
    labels = [
        settlement.settle(batch_with((job(message, T), {})), SETTINGS, NOW).dead[0].target_label
        for message in (
            {"id": 1, "schema": "a.b", "table": "c"},
            {"id": 1, "schema": "a", "table": "b.c"},
            {"id": 1, "schema": "public", "table": "Docs", "embeddingColumn": "Vec"},
            {"id": 1, "schema": "", "table": "t"},
        )
    ]
    assert labels == [
        '"a.b".c.embedding',
        'a."b.c".embedding',
        'public."Docs"."Vec"',
        '"".t.embedding',
    ]


def test_jobs_of_a_deferred_target_are_deferred() -> None:
    j = job({"target": 1, "keys": [1]}, T)
    batch = batch_with((j, {}))
    batch.deferred[1] = "model missing"
    out = settlement.settle(batch, SETTINGS, NOW)
    assert out.defer == [1] and not (out.delete or out.dead or out.retry)


def test_postponed_rows_go_back_at_once_without_an_attempt() -> None:
    """Chunked targets: rows past a batch's chunk budget (worker.pipeline.chunks.reading) are re-queued."""
    P = RowState.POSTPONED
    j = job({"target": 1, "keys": [1, 2, 3], "attempts": 1}, T, read_ct=1)
    out = settlement.settle(batch_with((j, {"1": W, "2": P, "3": P})), SETTINGS, NOW)
    assert out.delete == [1]
    assert out.resend == [({"target": 1, "keys": [2, 3], "attempts": 1}, 0)]
    assert not (out.retry or out.dead or out.archive)


def test_postponed_and_failed_rows_of_one_job_go_back_separately() -> None:
    P = RowState.POSTPONED
    j = job({"target": 1, "keys": [1, 2]}, T, read_ct=1)
    out = settlement.settle(batch_with((j, {"1": F, "2": P})), SETTINGS, NOW)
    assert out.delete == [1] and not out.retry
    messages = sorted((m["keys"], m["attempts"], delay > 0) for m, delay in out.resend)
    assert messages == [([1], 1, True), ([2], 0, False)]


def test_each_failed_row_is_told_its_attempt_and_what_comes_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The log of a failed row says whether another attempt follows; the last attempt's says
    the row went to embeddings.failures instead of reading like one more retry."""
    again = job({"target": 1, "keys": [1]}, T, read_ct=1)
    last = job({"target": 1, "keys": [2], "attempts": 2}, T, read_ct=1, msg_id=2)
    batch = batch_with((again, {"1": F}), (last, {"2": F}))
    out = settlement.settle(batch, SETTINGS, NOW)
    assert out.fates[(1, "1")].attempt == 1 and out.fates[(1, "1")].of == 3
    assert out.fates[(1, "1")].retry_in == out.retry[1]
    assert out.fates[(1, "2")] == Fate(attempt=3, of=3, retry_in=None)

    for row_key, fate in out.fates.items():  # what write() does once the batch committed
        batch.rows[row_key].fate = fate
    with caplog.at_level(logging.INFO, logger="worker.pipeline.stages"):
        stages.log_batch(batch)
    failed = {
        r.getMessage().split(" key=")[1][0]: r for r in caplog.records if "row failed" in r.msg
    }
    assert failed["1"].levelno == logging.WARNING
    assert f"attempt=1/3, retried in {out.retry[1]} s: boom 1" in failed["1"].getMessage()
    assert "failures" not in failed["1"].getMessage()
    assert failed["2"].levelno == logging.ERROR
    assert (
        "attempt=3/3, the last: dead-lettered into embeddings.failures" in failed["2"].getMessage()
    )
    assert failed["2"].getMessage().endswith(": boom 2")


def test_blocked_rows_wait_for_a_later_batch_spending_no_attempt() -> None:
    """A row a lock held up (worker/pipeline/bounds.py) is re-sent alone, its attempts as they
    were before this read, after a delay that grows with each time it was held up."""
    j = job({"target": 1, "keys": [1, 2, 3], "attempts": 2}, T, read_ct=1)
    out = settlement.settle(batch_with((j, {"1": W, "2": RowState.BLOCKED, "3": W})), SETTINGS, NOW)
    assert out.delete == [1] and not (out.retry or out.dead or out.archive)
    assert out.resend == [({"target": 1, "keys": [2], "attempts": 2, "blocked": 1}, 1)]
    again = job({"target": 1, "keys": [2], "attempts": 2, "blocked": 3}, T, read_ct=1)
    out = settlement.settle(batch_with((again, {"2": RowState.BLOCKED})), SETTINGS, NOW)
    assert out.resend == [({"target": 1, "keys": [2], "attempts": 2, "blocked": 4}, 8)]
    assert out.delete == [1] and not (out.retry or out.dead)


def test_the_delay_of_a_blocked_row_grows_to_its_cap() -> None:
    from worker.pipeline import bounds

    delays = [bounds.blocked_delay(n) for n in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert bounds.blocked_delay(10**6) == bounds.BLOCKED_MAX_SECONDS
