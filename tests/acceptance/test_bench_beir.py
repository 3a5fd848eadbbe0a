"""`make bench-beir` end to end (`python -m bench.beir`): a small dataset in BEIR's layout,
written here with judgements whose scores are known by hand, loaded, watched and embedded by the
real worker with all-MiniLM-L6-v2, ranked through the SQL functions and POST /search, scored;
the printed figures are checked.

The documents are on unrelated subjects, so each ranking's first document is certain: the one
a query is about, by meaning and by its words. But for "automobile repair", whose document
("fixing a broken car engine") shares no word with it: full-text search finds nothing for it,
so that ranking scores 0 there (every judged query counts), and 1 for the other two.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.cluster import REPO, Cluster
from tests.support.models import MINILM, require_minilm

pytestmark = pytest.mark.slow

CORPUS = {
    "cats": ("Why cats purr", "A cat purrs when it is content, and sometimes when it is hurt."),
    "bread": ("Baking sourdough bread", "Sourdough bread rises with a starter of wild yeast."),
    "car": ("Fixing a broken car engine", "Mechanics replace the spark plugs and the fuel pump."),
    "volcano": ("Volcanoes", "Lava and ash pour out of a volcano when it erupts."),
    "chess": ("Chess openings", "The Sicilian Defence answers the king's pawn opening."),
    "tides": ("Ocean tides", "The pull of the Moon raises the sea twice a day."),
    "taxes": ("Filing income taxes", "Deductions lower the income on which tax is owed."),
    "violin": ("Learning the violin", "Scales and bowing exercises come before the first sonata."),
}
QUERIES = {
    "q-cats": "why does my cat purr",
    "q-bread": "how to bake sourdough bread",
    "q-car": "automobile repair",
    "q-unjudged": "a query with no judgements is not scored",
}
# q-cats judges a second document as not relevant (grade 0), as BEIR's files may.
QRELS = [
    ("q-cats", "cats", 2),
    ("q-cats", "tides", 0),
    ("q-bread", "bread", 1),
    ("q-car", "car", 2),
]


def write_dataset(folder: Path) -> None:
    """corpus.jsonl and qrels/test.tsv gzipped (CRLF lines, as BEIR's), queries.jsonl plain."""
    (folder / "qrels").mkdir(parents=True)
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        for doc_id, (title, text) in CORPUS.items():
            f.write(
                json.dumps({"_id": doc_id, "title": title, "text": text, "metadata": {}}) + "\n"
            )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    with gzip.open(folder / "qrels" / "test.tsv.gz", "wt", encoding="utf-8", newline="") as f:
        f.write("query-id\tcorpus-id\tscore\r\n")
        f.writelines(f"{q}\t{d}\t{grade}\r\n" for q, d, grade in QRELS)


def figures(printed: str, columns: int) -> dict[str, list[float]]:
    """The rows of the printed table of `columns` numbers: ranking label -> its numbers."""
    rows = {}
    for line in printed.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        numbers = cells[1:]
        if (
            line.startswith("| ")
            and len(numbers) == columns
            and all(re.fullmatch(r"[0-9.]+", c) for c in numbers)
        ):
            rows[cells[0]] = [float(c) for c in numbers]
    return rows


def test_the_bench_scores_a_small_dataset_as_worked_out_by_hand(
    tmp_path: Path, cluster: Cluster
) -> None:
    model = require_minilm()
    data = tmp_path / "tiny-beir"
    write_dataset(data)
    results = tmp_path / "beir.json"
    env = {**os.environ, "BENCH_DATABASE_URL": cluster.admin_dsn}
    done = subprocess.run(
        [sys.executable, "-m", "bench.beir", str(data), "--model", MINILM,
         "--model-path", str(model.parent), "--results", str(results),
         "--hybrid", "fusion=rrf", "--runs", str(tmp_path / "runs")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout
    assert "BEIR tiny-beir: 8 documents, 3 test queries, 4 judgements" in printed
    assert f"model {MINILM}: embedded in" in printed
    assert "SQL and POST /search returned the same rankings" in printed
    assert "vector and default hybrid called in turn for every query" in printed
    found = figures(printed, 6)  # nDCG@10, R@100, MRR@10, p50, p95, HTTP p50
    assert set(found) == {
        "vector, `search()`",
        "full-text only, `hybrid_search(vector_weight => 0, text_match => 'any', fusion => 'rrf')`",
        "hybrid, `hybrid_search()` defaults",
        "hybrid, `hybrid_search(fusion => 'rrf')`",
    }
    third = pytest.approx(2 / 3, abs=1e-4)
    expected = {
        "vector, `search()`": [1.0, 1.0, 1.0],
        "full-text only, `hybrid_search(vector_weight => 0, text_match => 'any', fusion => 'rrf')`": [
            third,
            third,
            third,
        ],
        "hybrid, `hybrid_search()` defaults": [1.0, 1.0, 1.0],
        "hybrid, `hybrid_search(fusion => 'rrf')`": [1.0, 1.0, 1.0],
    }
    for label, numbers in expected.items():
        assert found[label][:3] == numbers, label
        assert all(ms >= 0 for ms in found[label][3:]), label

    # By length: "automobile repair" is the one short query (up to 3 words).
    assert "nDCG@10 by length of query: 1 of up to 3 words, 2 longer" in printed
    by_length = figures(printed, 2)
    fulltext = (
        "full-text only, `hybrid_search(vector_weight => 0, text_match => 'any', fusion => 'rrf')`"
    )
    assert by_length[fulltext] == [0.0, 1.0]
    assert by_length["vector, `search()`"] == [1.0, 1.0]

    saved = json.loads(results.read_text())
    assert saved["dataset"]["queries"] == 3
    assert saved["rankings"]["fulltext"]["queries_with_results"] == 2
    assert saved["embedding"]["documents"] == 8
    assert saved["machine"]["cores"] >= 1
    assert set(saved["latency_k10"]) == {
        "vector_p50_ms",
        "hybrid_p50_ms",
        "hybrid_over_vector",
        "http_vector_p50_ms",
        "http_hybrid_p50_ms",
        "http_hybrid_over_vector",
    }
    run = (tmp_path / "runs" / "vector.run").read_text().splitlines()
    assert run[0].split() == ["q-bread", "Q0", "bread", "1", "-1", "vector"]


# Fields: the question's words are in the title of "review" once each, and twice each in the
# body of "cohort". One field, BM25 puts "cohort" first (tf 2 against 1; its body longer, but
# not enough); with the title counted twice, "review" (tf 2, the shorter) comes first. Worked
# out: the score of each lexeme, tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len / avglen)), len 7
# and 10 lexemes: "review" 1.078 at weight 1 and 1.447 at weight 2, "cohort" 1.310.
FIELDS_CORPUS = {
    "review": ("Statins and breast cancer", "A cohort followed for ten years."),
    "cohort": (
        "Cohort outcomes",
        "Statins lowered breast cancer risk in one cohort, statins raised breast cancer in another.",
    ),
    **{key: CORPUS[key] for key in ("volcano", "chess", "tides")},
}


def test_the_bench_weighs_the_title_for_each_weight_asked(tmp_path: Path, cluster: Cluster) -> None:
    model = require_minilm()
    data = tmp_path / "fields-beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": key, "title": title, "text": text}) + "\n"
            for key, (title, text) in FIELDS_CORPUS.items()
        )
    )
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "statins breast cancer"}))
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\treview\t1\n")
    results = tmp_path / "fields.json"
    env = {**os.environ, "BENCH_DATABASE_URL": cluster.admin_dsn}
    done = subprocess.run(
        [sys.executable, "-m", "bench.beir", str(data), "--model", MINILM,
         "--model-path", str(model.parent), "--results", str(results),
         "--title-weights", "1,2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SQL and POST /search returned the same rankings" in done.stdout
    rankings = json.loads(results.read_text())["rankings"]
    assert set(rankings) == {
        "vector",
        "fulltext",
        "hybrid",
        "fulltext[title=1]",
        "hybrid[title=1]",
        "fulltext[title=2]",
        "hybrid[title=2]",
    }
    # "review" second by full text without fields and at weight 1 (nDCG@10 1/log2(3)), first
    # at weight 2.
    second = pytest.approx(0.6309, abs=1e-4)
    assert rankings["fulltext"]["ndcg@10"] == second
    assert rankings["fulltext[title=1]"]["ndcg@10"] == second
    assert rankings["fulltext[title=2]"]["ndcg@10"] == 1.0
    assert rankings["fulltext[title=2]"]["label"].endswith(", title weight 2")


def test_a_terminated_bench_leaves_no_database_nor_worker_behind(
    tmp_path: Path, cluster: Cluster
) -> None:
    """SIGTERM (`timeout`, a cancelled CI job) while the worker embeds: the bench left its
    throwaway cluster running, as it did nothing on SIGTERM; it now unwinds as on Ctrl-C, its
    worker stopped and its database (here: on BENCH_DATABASE_URL's server) dropped. It also
    says each stage on stderr: it was silent for minutes."""
    model = require_minilm()
    data = tmp_path / "tiny-beir"
    write_dataset(data)
    env = {**os.environ, "BENCH_DATABASE_URL": cluster.admin_dsn}
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench.beir", str(data), "--model", MINILM,
         "--model-path", str(model.parent), "--results", str(tmp_path / "beir.json")],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert bench.stderr is not None
    said = []
    for line in bench.stderr:
        said.append(line)
        if "bench-beir: embedding 8 documents" in line:
            break
    assert said and "8 documents, 3 queries; starting a database" in said[0], said
    bench.terminate()
    assert bench.wait(timeout=120) != 0
    bench.stderr.close()
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'beir%'"
            " UNION ALL SELECT application_name FROM pg_stat_activity"
            " WHERE application_name = 'embed-worker' AND datname LIKE 'beir%'"
        ).fetchall()
    assert left == []
    assert not (tmp_path / "beir.json").exists()
