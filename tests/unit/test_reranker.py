"""The cross-encoder (worker/models/reranker.py) on a tiny random-weight model built in the test
session: its scores mean nothing, but how they are computed is checked against the graph run
one pair at a time, unbatched and unpadded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from worker import exceptions
from worker.models.files import ModelLocation
from worker.models.reranker import CrossEncoder

QUESTION = "how long does a refund take"
PASSAGES = [
    "Refunds are paid within 14 days of the return.",
    "Our office is closed on public holidays.",
    "It takes 14 days.",
    "Shipping is free above 50 euros, and parcels arrive in two to three working days "
    "anywhere in the country, tracked from the warehouse to your door.",
    "",
]


@pytest.fixture(scope="module")
def reranker(tiny_cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(tiny_cross_encoder_dir, location=ModelLocation.of(), threads=1)


def reference_scores(model_dir: Path, question: str, passages: list[str]) -> list[float]:
    """Each pair alone through onnxruntime: nothing padded, nothing batched."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=512)
    session = ort.InferenceSession(str(model_dir / "model.onnx"))
    scores = []
    for passage in passages:
        enc = tokenizer.encode(question, passage)
        feed: dict[str, Any] = {
            "input_ids": np.array([enc.ids], np.int64),
            "attention_mask": np.array([enc.attention_mask], np.int64),
            "token_type_ids": np.array([enc.type_ids], np.int64),
        }
        (logits,) = session.run(["logits"], feed)
        scores.append(float(logits[0, 0]))
    return scores


def test_scores_are_each_pairs_alone(reranker: CrossEncoder, tiny_cross_encoder_dir: Path) -> None:
    """Batching, sorting by length and padding change no score, and the passage is the second
    segment (token type 1): the pair, not the concatenation."""
    scores = reranker.score(QUESTION, PASSAGES)
    expected = reference_scores(tiny_cross_encoder_dir, QUESTION, PASSAGES)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert len(set(np.round(scores, 4))) == len(PASSAGES)  # they differ: an order exists


def test_scores_follow_the_passages_order(reranker: CrossEncoder) -> None:
    order = [3, 0, 4, 2, 1]
    scores = reranker.score(QUESTION, PASSAGES)
    shuffled = reranker.score(QUESTION, [PASSAGES[i] for i in order])
    np.testing.assert_allclose(shuffled, scores[order], rtol=1e-5, atol=1e-6)
    assert reranker.score(QUESTION, []).shape == (0,)


def test_a_long_passage_loses_its_tail_not_the_question(reranker: CrossEncoder) -> None:
    long = "refund " * 2000
    (score,) = reranker.score(QUESTION, [long])
    tokens = reranker._tokenizer.encode(QUESTION, long)
    assert len(tokens.ids) == reranker.max_tokens
    assert tokens.type_ids.count(0) == len(reranker._tokenizer.encode(QUESTION).ids)
    assert np.isfinite(score)


def test_a_huge_passage_is_read_from_its_head_only(reranker: CrossEncoder) -> None:
    """A multi-megabyte row scores as its head does (the tokens kept are the same), without
    tokenizing it whole."""
    head = "Refunds are paid within 14 days. " * 400
    (whole,) = reranker.score(QUESTION, [head + "x " * 2_000_000])
    (first,) = reranker.score(QUESTION, [head])
    assert whole == pytest.approx(first, rel=1e-5)


def test_an_embedder_is_not_a_cross_encoder(tiny_model_dir: Path) -> None:
    with pytest.raises(exceptions.ModelError, match="not a cross-encoder"):
        CrossEncoder.load(tiny_model_dir, location=ModelLocation.of(), threads=1)


def test_a_missing_cross_encoder_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(exceptions.ModelNotFound):
        CrossEncoder.load("no-such-reranker", location=ModelLocation.of(str(tmp_path)))
