"""The BEIR bench's reading and scoring (bench/beir), without a database: a dataset in BEIR's
layout (plain or gzipped) read as BEIR reads it, and the figures ir-measures computes pinned on
rankings whose scores are worked out by hand."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from bench.beir import dataset, rankings, scoring

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 1},
    "q2": {"d9": 1},
}


def test_ndcg_recall_and_mrr_are_trec_evals_with_graded_gains() -> None:
    found = scoring.score({"q1": ["d2", "d1", "x"], "q2": ["a", "d9"]}, QRELS)
    # q1: DCG = 1/log2(2) + 2/log2(3); ideal = 2 + 1/log2(3) + 1/log2(4).
    q1 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3) + 0.5)
    q2 = 1 / math.log2(3)
    assert found.per_query["q1"]["ndcg@10"] == pytest.approx(q1)
    assert found.per_query["q2"]["ndcg@10"] == pytest.approx(q2)
    assert found.mean["ndcg@10"] == pytest.approx((q1 + q2) / 2)
    assert found.mean["recall@100"] == pytest.approx((2 / 3 + 1) / 2)
    assert found.mean["mrr@10"] == pytest.approx((1 + 0.5) / 2)


def test_the_order_given_is_the_order_scored() -> None:
    """trec_eval sorts by score, ties by document id: the scores handed over fall with the
    position, so "d2" before "d1" stays so, and a repeated id counts at its first place."""
    found = scoring.score({"q2": ["zz", "d9", "d9"]}, {"q2": {"d9": 1}})
    assert found.per_query["q2"]["mrr@10"] == pytest.approx(0.5)
    assert scoring.run_of({"q": ["b", "a", "b"]}) == {"q": {"b": 0.0, "a": -1.0}}


def test_a_query_without_results_counts_as_zero() -> None:
    found = scoring.score({"q1": ["d1", "d2", "d3"]}, QRELS)
    assert found.per_query["q1"]["ndcg@10"] == pytest.approx(1.0)
    assert found.per_query["q2"] == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    assert found.mean["ndcg@10"] == pytest.approx(0.5)


def test_only_the_first_100_and_10_count() -> None:
    ranking = [f"x{i}" for i in range(100)] + ["d9"]
    found = scoring.score({"q2": ranking}, {"q2": {"d9": 1}})
    assert found.mean == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    found = scoring.score({"q2": [*ranking[:10], "d9"]}, {"q2": {"d9": 1}})
    assert found.mean["recall@100"] == 1.0
    assert found.mean["mrr@10"] == 0.0


def _write(path: Path, text: str, *, gzipped: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gzipped:
        with gzip.open(path.with_name(path.name + ".gz"), "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _dataset(folder: Path, *, gzipped: bool, qrels: str | None = None) -> Path:
    corpus = [
        {"_id": "d1", "title": "Cats", "text": "Cats purr.", "metadata": {}},
        {"_id": "d2", "title": "", "text": "Dogs bark."},
    ]
    queries = [{"_id": "q1", "text": "purring"}, {"_id": "q9", "text": "never judged"}]
    _write(folder / "corpus.jsonl", "".join(json.dumps(c) + "\n" for c in corpus), gzipped=gzipped)
    _write(folder / "queries.jsonl", "".join(json.dumps(q) + "\n" for q in queries), gzipped=False)
    _write(
        folder / "qrels" / "test.tsv",
        qrels or "query-id\tcorpus-id\tscore\r\nq1\td1\t2\r\nq1\td2\t0\r\n",
        gzipped=gzipped,
    )
    return folder


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_dataset_in_beirs_layout(tmp_path: Path, gzipped: bool) -> None:
    found = dataset.load(_dataset(tmp_path / "tiny", gzipped=gzipped))
    assert found.name == "tiny"
    assert [(d.id, d.title, d.text) for d in found.documents] == [
        ("d1", "Cats", "Cats purr."),
        ("d2", "", "Dogs bark."),
    ]
    assert found.queries == {"q1": "purring"}  # the judged ones only
    assert found.qrels == {"q1": {"d1": 2, "d2": 0}}
    assert found.judgements == 2
    assert set(found.digests) == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv"}


def test_judgements_of_unknown_documents_or_queries_are_refused(tmp_path: Path) -> None:
    with pytest.raises(dataset.DatasetError, match="documents missing from the corpus: d7"):
        dataset.load(
            _dataset(tmp_path / "a", gzipped=False, qrels="query-id\tcorpus-id\tscore\nq1\td7\t1\n")
        )
    with pytest.raises(dataset.DatasetError, match=r"queries missing from queries\.jsonl: q5"):
        dataset.load(
            _dataset(tmp_path / "b", gzipped=False, qrels="query-id\tcorpus-id\tscore\nq5\td1\t1\n")
        )
    (tmp_path / "b" / "corpus.jsonl").unlink()
    with pytest.raises(dataset.DatasetError, match=r"no corpus.jsonl \(nor corpus.jsonl.gz\)"):
        dataset.load(tmp_path / "b")


def test_hybrid_options_from_the_command_line() -> None:
    assert rankings.parse_option_list("fusion=rrf, depth=200,text_weight=1.5") == {
        "fusion": "rrf",
        "depth": 200,
        "text_weight": 1.5,
    }
    with pytest.raises(ValueError, match="name=value"):
        rankings.parse_option_list("rrf")
    variant = rankings.hybrid_variant({"text_match": "all", "text_weight": 2})
    assert variant.body == {"mode": "hybrid", "text_match": "all", "text_weight": 2}
    assert variant.label == "hybrid, `hybrid_search(text_match => 'all', text_weight => 2)`"


def test_the_help_says_what_the_bench_does_and_every_option() -> None:
    """`python -m bench.beir -h` cut its description at the docstring's first line ("...in
    BEIR's layout, through the") and most options had no help."""
    from bench.beir.__main__ import parser

    p = parser()
    assert "through the product's own search functions" in " ".join(p.format_help().split())
    assert p.epilog and "BENCH_DATABASE_URL" in p.epilog
    for action in p._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help"


def test_a_sample_keeps_its_queries_their_judged_documents_and_as_many_others() -> None:
    """`--sample N`: there was no way to look at a slice but to cut the files by hand."""
    documents = [dataset.Document(f"d{i}", "", f"text {i}") for i in range(40)]
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 10}": 2} for i in range(10)}
    full = dataset.Dataset(
        "set", documents, {q: f"query {q}" for q in qrels}, qrels, {"corpus.jsonl": "x"}
    )
    slice_ = dataset.sample(full, 3)
    assert slice_ == dataset.sample(full, 3)  # the same slice every time
    assert slice_.name == "set-sample3" and len(slice_.queries) == 3
    assert slice_.qrels == {q: qrels[q] for q in slice_.queries}
    judged = {d for grades in slice_.qrels.values() for d in grades}
    kept = {d.id for d in slice_.documents}
    assert judged <= kept and len(kept) == 2 * len(judged)
    assert [d.id for d in slice_.documents] == [d.id for d in documents if d.id in kept]
    assert dataset.sample(full, 99) is full
    with pytest.raises(dataset.DatasetError, match="at least one query"):
        dataset.sample(full, 0)
