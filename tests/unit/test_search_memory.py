"""doctor's search memory check, from the HNSW indexes' sizes and shared_buffers (the test
cluster's indexes are kilobytes and its shared_buffers fixed, so the warning is checked here)."""

from __future__ import annotations

from worker.cli.search_memory import memory_finding

MB = 1024 * 1024


def test_indexes_shared_buffers_can_hold_are_ok() -> None:
    found = memory_finding([("public.notes_embedding_idx", 112 * MB, 5)], 128 * MB)
    assert (found.level, found.check, found.fix) == ("ok", "search memory", "")
    assert found.detail == (
        "112 MB of HNSW indexes, shared_buffers 128 MB: shared buffers can hold them"
    )


def test_no_index_is_ok_and_says_so() -> None:
    found = memory_finding([], 128 * MB)
    assert (found.level, found.detail) == ("ok", "no watched table has an HNSW index yet")


def test_indexes_beyond_shared_buffers_warn_naming_the_largest_and_the_fix() -> None:
    indexes = [
        (f"public.t{n}_embedding_idx", size * MB, 1)
        for n, size in enumerate((900, 300, 100, 60, 1))
    ]
    found = memory_finding(indexes, 1024 * MB)
    assert found.level == "warn"
    assert found.detail.startswith(
        "1,361 MB of HNSW indexes, shared_buffers 1,024 MB (public.t0_embedding_idx 900 MB,"
        " public.t1_embedding_idx 300 MB, public.t2_embedding_idx 100 MB and 2 more): a new"
        " question's search reads the index pages it walks from the OS"
    )
    assert "raise shared_buffers" in found.fix and "pg_prewarm" in found.fix
    assert "docs/operating.md#searches-are-slow" in found.fix


def test_small_indexes_are_counted_in_kilobytes() -> None:
    found = memory_finding(
        [("public.a_idx", 16 * 1024, 0), ("public.b_idx", 40 * 1024, 0)], 128 * MB
    )
    assert found.detail.startswith("56 kB of HNSW indexes, shared_buffers 128 MB")


def test_only_searched_indexes_need_shared_buffers() -> None:
    """An index no search walked (its table searched exactly, or not at all) is not counted
    once another was searched; while none was (statistics just reset), all count."""
    indexes = [("public.big_idx", 900 * MB, 0), ("public.used_idx", 100 * MB, 12)]
    found = memory_finding(indexes, 128 * MB)
    assert (found.level, found.detail) == (
        "ok",
        "100 MB of HNSW indexes searched (1 more never searched, not counted), shared_buffers"
        " 128 MB: shared buffers can hold them",
    )
    found = memory_finding(
        [("public.big_idx", 900 * MB, 0), ("public.used_idx", 100 * MB, 0)], 128 * MB
    )
    assert found.level == "warn" and found.detail.startswith("1,000 MB of HNSW indexes, shared")
    found = memory_finding(
        [("public.big_idx", 900 * MB, 3), ("public.used_idx", 100 * MB, 0)], 128 * MB
    )
    assert found.level == "warn" and "(public.big_idx 900 MB)" in found.detail
