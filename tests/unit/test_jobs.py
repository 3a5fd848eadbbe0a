"""Parsing job messages: our shape, the Supabase guide's shape, and everything malformed."""

from __future__ import annotations

import random

import pytest

from tests.support.factories import job, target
from worker.pipeline import jobs, messages


def test_our_message_with_keys_and_attempts() -> None:
    t = target()
    parsed = job({"target": 1, "keys": [3, "4", 3], "attempts": 2}, {1: t}, read_ct=1)
    assert parsed.target is t
    assert parsed.keys == ["3", "4"]  # canonical text, duplicates folded
    assert parsed.raw_keys == {"3": 3, "4": "4"}
    assert parsed.attempts == 3
    assert parsed.error is None


def test_the_triggers_column_shape_reads_as_the_keys_shape() -> None:
    # An integer column as its array text, any other as a JSON array (sql/20_queue.sql).
    single = job({"target": 1, "columns": ["{3,-4,3}"]}, {1: target()})
    assert single.keys == ["3", "-4"] and single.raw_keys == {"3": 3, "-4": -4}
    t = target(key_columns=("tenant", "slug"), key_types=("int8", "text"))
    parsed = job({"target": 1, "columns": ["{1,2}", ["a", "b,c"]]}, {1: t})
    assert parsed.keys == ['["1","a"]', '["2","b,c"]']
    assert parsed.raw_keys['["2","b,c"]'] == [2, "b,c"]  # as the keys shape carries it
    assert parsed.error is None and parsed.bad_keys == []
    assert messages.message_keys({"columns": ["{7}", ["x"]]}) == [[7, "x"]]
    assert messages.message_keys({"keys": [[7, "x"]]}) == [[7, "x"]]


@pytest.mark.parametrize(
    "columns",
    [[], "{1}", ["{1,x}"], ["1,2"], [7], ["{1,2}", ["a"]], None],
)
def test_malformed_key_columns_make_a_malformed_job(columns: object) -> None:
    parsed = job({"target": 1, "columns": columns}, {1: target()})
    assert parsed.error is not None and parsed.error.startswith("malformed job message")


def test_key_columns_that_do_not_fit_the_target_are_bad_keys() -> None:
    t = target(key_columns=("tenant", "id"), key_types=("int8", "int8"))
    parsed = job({"target": 1, "columns": ["{1,2}"]}, {1: t})  # one column for a 2-column key
    assert parsed.keys == [] and [raw for raw, _ in parsed.bad_keys] == [1, 2]


def test_invalid_keys_are_set_aside_and_the_rest_kept() -> None:
    parsed = job({"target": 1, "keys": [1, "x", True, None, 2**70, [1]]}, {1: target()})
    assert parsed.keys == ["1"]
    assert [raw for raw, _ in parsed.bad_keys] == ["x", True, None, 2**70, [1]]


def test_uuid_keys_are_canonicalised() -> None:
    t = target(key_types=("uuid",))
    parsed = job({"target": 1, "keys": ["A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"]}, {1: t})
    assert parsed.keys == ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]


def test_an_unknown_target_is_an_error_that_says_how_to_register() -> None:
    parsed = job({"target": 9, "keys": [1]}, {1: target()})
    assert parsed.target is None
    assert parsed.error is not None and "embeddings.watch()" in parsed.error


def supabase_message(table: str, content_function: str) -> dict[str, object]:
    """A job in the shape Supabase's automatic embeddings send, for row 7 of public.`table`."""
    return {
        "id": 7,
        "schema": "public",
        "table": table,
        "contentFunction": content_function,
        "embeddingColumn": "embedding",
    }


def test_supabase_shape_maps_to_the_registered_target() -> None:
    t = target(content_column=None, content_function=("public", "embedding_input"))
    message = supabase_message("docs", "embedding_input")
    parsed = job(message, {1: t})
    assert parsed.target is t and parsed.supabase_shape and parsed.keys == ["7"]
    assert parsed.single_key_message("7") == message


def test_supabase_shape_for_an_unregistered_table_names_the_fix() -> None:
    message = supabase_message("other", "f")
    parsed = job(message, {1: target()})
    assert parsed.target is None
    assert parsed.error == (
        "public.other.embedding is not watched; register it with: SELECT embeddings.watch("
        "'public.other', 'f', embedding_column => 'embedding', triggers => false);"
    )


def test_supabase_shape_naming_another_function_is_refused() -> None:
    """Nothing named in a message runs unless it is the registered content function."""
    t = target(content_column=None, content_function=("public", "embedding_input"))
    message = supabase_message("docs", "pg_read_file")
    parsed = job(message, {1: t})
    assert parsed.target is None
    assert parsed.error is not None and "pg_read_file" in parsed.error


@pytest.mark.parametrize(
    "message",
    [
        "just text",
        [1, 2],
        {"nothing": "useful"},
        {"target": "1", "keys": [1]},
        {"target": 1, "keys": "1"},
        {"target": True, "keys": [1]},
        {"id": 1, "schema": ["public"], "table": "docs"},
    ],
)
def test_malformed_messages_are_errors(message: object) -> None:
    parsed = job(message, {1: target()})
    assert parsed.target is None and parsed.error


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    delays = [jobs.backoff_seconds(n, 5, 300, rng) for n in range(1, 9)]
    for attempt, delay in enumerate(delays, start=1):
        expected = min(300, 5 * 2 ** (attempt - 1))
        assert 0.8 * expected - 0.5 <= delay <= 1.2 * expected + 0.5
    assert max(delays) <= 360
    assert jobs.backoff_seconds(1, 0.01, 300) == 0


def test_a_backfill_batch_ends_its_turn_with_the_last_target_in_the_turns_order() -> None:
    """read_jobs_by_target serves the targets after the last one first, then from the lowest:
    the next read starts after the one this batch ended with."""

    def rows(*targets: object) -> list[tuple[object, ...]]:
        return [(i, 1, None, None, {"target": t, "keys": [1]}) for i, t in enumerate(targets)]

    assert jobs.turn_ended(rows(3), None) == 3
    assert jobs.turn_ended(rows(2, 5, 1), None) == 5  # a turn of three targets, from the first
    assert jobs.turn_ended(rows(7, 9, 1, 2), 6) == 2  # after 6: 7, 9, then again from 1
    assert jobs.turn_ended(rows(7, 9), 6) == 9
    # Jobs without a target (the Supabase guide's shape) end a turn: the next starts over.
    assert jobs.turn_ended([(1, 1, None, None, {"id": 4, "table": "docs"})], 6) is None
    assert jobs.turn_ended(rows(True), 6) is None  # (not a target id)


@pytest.mark.parametrize(
    "named",
    [
        '"My Schema.x"."Content Fn ß"',  # the registered function, qualified and quoted
        '"Content Fn ß"',  # quoted, unqualified
        "My Schema.x.Content Fn ß",  # dotted as it is (as the guide's edge function names it)
        "Content Fn ß",
    ],
)
def test_supabase_shape_naming_the_registered_function_quoted_is_served(named: str) -> None:
    t = target(content_column=None, content_function=("My Schema.x", "Content Fn ß"))
    parsed = job(supabase_message("docs", named), {1: t})
    assert parsed.error is None and parsed.target is t


@pytest.mark.parametrize(
    "named",
    ['"my schema.x"."Content Fn ß"', '"My Schema.x"."content fn ß"', "public.embedding_input"],
)
def test_supabase_shape_naming_another_quoted_function_names_both_quoted(named: str) -> None:
    t = target(content_column=None, content_function=("My Schema.x", "Content Fn ß"))
    parsed = job(supabase_message("docs", named), {1: t})
    assert parsed.target is None and parsed.error is not None
    assert 'registered with content function "My Schema.x"."Content Fn ß", but' in parsed.error


def test_supabase_shape_naming_an_unquoted_function_reads_it_as_sql_does() -> None:
    t = target(content_column=None, content_function=("public", "embedding_input"))
    for named in ("public.embedding_input", "PUBLIC.Embedding_Input", 'public."embedding_input"'):
        assert job(supabase_message("docs", named), {1: t}).target is t, named
    assert job(supabase_message("docs", '"Embedding_Input"'), {1: t}).target is None
