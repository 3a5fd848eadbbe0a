"""A long document's state between its pieces (worker/pipeline/pieces.py): what it takes, what a
recorded progress confirms, its estimate; no database."""

from __future__ import annotations

import pytest

from tests.support.models import shared_models_dir
from worker.models import onnx
from worker.pipeline import pieces
from worker.pipeline.chunking import Splitter

TEXT = "\n\n".join(
    f"Paragraph {i}. The planner estimates the cost of scan {i}." for i in range(200)
)


@pytest.fixture(scope="module")
def splitter() -> Splitter:
    path = shared_models_dir() / "all-MiniLM-L6-v2" / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return Splitter(onnx.load_tokenizer(path, max_tokens=None), 32, 4)


def test_taking_a_piece_at_a_time_reads_the_chunks_of_the_whole_text(splitter: Splitter) -> None:
    doc = pieces.Document(splitter.stream(TEXT), "m", len(TEXT))
    seen = []
    while not doc.complete:
        taken = doc.take(max_chunks=5, max_scan=10_000)
        seen += [doc.pending.chunks[i] for i in taken]
        assert doc.confirm(doc.done + len(doc.pending.chunks))  # the piece committed
        assert doc.pending.chunks == [] and doc.pending.first_seq == doc.done
    assert seen == splitter.split(TEXT)
    assert doc.estimated() == len(seen)


def test_confirm_keeps_an_uncommitted_piece_and_refuses_a_foreign_progress(
    splitter: Splitter,
) -> None:
    doc = pieces.Document(splitter.stream(TEXT), "m", len(TEXT))
    doc.take(max_chunks=4, max_scan=10_000)
    assert doc.confirm(0) and len(doc.pending.chunks) == 4  # not committed: written again
    assert doc.confirm(2) and doc.done == 2 and doc.pending.first_seq == 2
    assert len(doc.pending.chunks) == 2
    assert not doc.confirm(0)  # the record went back: someone else wrote the document
    assert not doc.confirm(9)  # further than this document read


def test_a_continued_document_skips_its_committed_chunks(splitter: Splitter) -> None:
    doc = pieces.Document(splitter.stream(TEXT), "m", len(TEXT), done=10)
    taken = doc.take(max_chunks=3, max_scan=100_000)
    assert [doc.pending.chunks[i].seq for i in taken] == [10, 11, 12]
    assert doc.pending.first_seq == 10


def test_the_estimate_scales_the_chunks_by_the_share_of_text_they_cover(
    splitter: Splitter,
) -> None:
    doc = pieces.Document(splitter.stream(TEXT), "m", len(TEXT))
    doc.take(max_chunks=10, max_scan=100_000)
    total = len(splitter.split(TEXT))
    assert 0.7 * total <= doc.estimated() <= 1.3 * total


def test_the_cache_keeps_the_most_recent_documents(splitter: Splitter) -> None:
    cache = pieces.Cache(size=2)
    docs = [pieces.Document(splitter.stream(TEXT), "m", 1) for _ in range(3)]
    for i, doc in enumerate(docs):
        cache.put(("db", 1, 1, str(i), "d"), doc)
    assert cache.take(("db", 1, 1, "0", "d")) is None
    assert cache.take(("db", 1, 1, "2", "d")) is docs[2]
    assert cache.take(("db", 1, 1, "2", "d")) is None  # taken: no two batches share it
