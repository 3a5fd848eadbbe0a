"""bench/bm25_statements.py's agreement between the counted and the sampled rankings."""

from __future__ import annotations

from typing import Any

from bench.bm25_statements import _agreement, _differing, questions


def test_agreement_counts_rankings_the_same_to_depth_and_the_top_10s_overlap() -> None:
    counted: list[list[Any]] = [list(range(20)), list(range(20)), [{"id": 1}, {"id": 2}]]
    sampled: list[list[Any]] = [
        list(range(20)),  # the same
        [*range(10), *range(11, 21)],  # the same top 10, not the same to the depth
        [{"id": 2}, {"id": 3}],  # composite keys (JSON objects): one of two shared
    ]
    assert _agreement(counted, sampled) == {
        "same_ranking": 1,
        "top10_overlap_mean": round((1 + 1 + 0.5) / 3, 3),
        "top10_overlap_min": 0.5,
    }


def test_a_question_ranking_nothing_either_way_agrees() -> None:
    # A question of stop words only ('This is an') ranks no row by either statement: that is
    # the same answer, not a top 10 missed; a statement that alone finds nothing misses it all.
    assert _agreement([[]], [[]])["top10_overlap_min"] == 1.0
    assert _agreement([[]], [[7]])["top10_overlap_min"] == 0.0
    assert _agreement([[7]], [[]])["top10_overlap_min"] == 0.0


def test_the_filtered_set_is_the_3_word_questions_under_one_tenant() -> None:
    texts = [f"word{n} other{n} third{n} fourth{n}" for n in range(50)]
    sets = questions(texts)
    assert [q for q, _ in sets["3_words_filtered"]] == [q for q, _ in sets["3_words"][:12]]
    assert {f for _, f in sets["3_words_filtered"]} == {'{"tenant": 7}'}
    assert all(f is None for _, f in sets["3_words"] + sets["8_words"])


def test_a_question_ranked_apart_shows_both_firsts_and_the_sampled_firsts_counted_score() -> None:
    def row(key: int, content: str, score: float) -> dict[str, Any]:
        return {"key": key, "content": content, "text_score": score}

    same = [row(1, "A", 2.0)]
    counted = [row(1, "A", 2.0), row(2, "B", 1.99)]
    sampled = [row(2, "B", 2.01), row(1, "A", 2.0)]  # two texts near a tie traded places
    found = _differing(["same", "apart"], [same, counted], [same, sampled])
    assert found == [
        {
            "question": "apart",
            "counted_first": ["A", 2.0],
            "sampled_first": ["B", 2.01],
            "its_counted_score": 1.99,
        }
    ]
    assert _differing(["q"], [counted], [[]])[0]["sampled_first"] is None
