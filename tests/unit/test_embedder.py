"""The embedder: numerics against an independent reference, batching, truncation, input, int8."""

from __future__ import annotations

import inspect
import json
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from tests.support import modelgen
from worker import exceptions
from worker.models import quantization
from worker.models.batching import CALL_TOKENS, batches
from worker.models.embedder import Embedder
from worker.models.files import ModelLocation
from worker.models.onnx import resolve_threads, session_options

pytestmark = pytest.mark.usefixtures("embed_env")

# "Hello world" through sentence-transformers' all-MiniLM-L6-v2, as published (e.g. in the
# documentation of the `llm` tool): -0.03447725251317024, 0.031023245304822922, ...
HELLO_WORLD_FIRST_VALUES = [-0.0344772, 0.0310232, 0.0067350, 0.0261089, -0.0393620]


def reference_embedding(model_dir: Path, text: str, *, pooling: str = "mean") -> np.ndarray:
    """One text embedded with tokenizers, onnxruntime and numpy directly: no code under test.

    One text at a time, so there is no padding; max tokens from the model's own config files.
    """
    sbert = model_dir / "sentence_bert_config.json"
    config = json.loads((model_dir / "config.json").read_text())
    limit = (
        json.loads(sbert.read_text())["max_seq_length"]
        if sbert.exists()
        else config["max_position_embeddings"]
    )
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(limit)
    encoding = tokenizer.encode(text)
    session = _reference_session(model_dir / "model.onnx")
    ids = np.array([encoding.ids], dtype=np.int64)
    available = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
    feed = {i.name: available[i.name] for i in session.get_inputs()}
    hidden = session.run(None, feed)[0][0]
    vector = hidden[0] if pooling == "cls" else hidden.mean(axis=0)
    return np.asarray(vector / np.linalg.norm(vector), dtype=np.float32)


_SESSIONS: dict[Path, ort.InferenceSession] = {}


def _reference_session(path: Path) -> ort.InferenceSession:
    if path not in _SESSIONS:
        _SESSIONS[path] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _SESSIONS[path]


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """Real prose of mixed lengths (a word to past 256 tokens), from standard library docs."""
    import collections
    import json as json_module
    import logging
    import textwrap as textwrap_module

    source = " ".join(
        inspect.getdoc(obj) or ""
        for obj in (
            collections,
            json_module,
            logging,
            textwrap_module,
            logging.Logger,
            collections.OrderedDict,
        )
    ).split()
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        length = rng.choice([1, 2, 5, 12, 30, 60, 120, 250, 400])
        start = rng.randrange(0, max(1, len(source) - length))
        texts.append(" ".join(source[start : start + length]))
    return texts


def cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- numerics on the real all-MiniLM-L6-v2 -------------------------------------------------------


def test_vectors_match_an_independent_reference(minilm: Embedder, minilm_dir: Path) -> None:
    texts = [
        "hello world",
        "The quick brown fox jumps over the lazy dog.",
        "Ünïcödé, punctuation!? and numbers 3.14159",
        "long " * 400,  # past the 256-token limit
        *mixed_texts(8, seed=1),
    ]

    got = minilm.embed(texts)

    for text, row in zip(texts, got, strict=True):
        np.testing.assert_allclose(row, reference_embedding(minilm_dir, text), atol=1e-4)


def test_hello_world_first_values(minilm: Embedder, minilm_dir: Path) -> None:
    vector = minilm.embed(["hello world"])[0]

    np.testing.assert_allclose(vector[:5], HELLO_WORLD_FIRST_VALUES, atol=1e-5)
    np.testing.assert_allclose(
        vector[:5], reference_embedding(minilm_dir, "hello world")[:5], atol=1e-6
    )


def test_a_text_embeds_the_same_alone_and_in_a_mixed_batch(minilm: Embedder) -> None:
    texts = mixed_texts(200)
    result = minilm.embed_with_stats(texts)

    assert result.vectors.shape == (200, 384)
    assert result.padded_tokens < 1.5 * result.tokens  # sorting kept padding low
    lengths = [len(t) for t in texts]
    picks = {
        int(np.argmin(lengths)),
        int(np.argmax(lengths)),
        *random.Random(2).sample(range(200), 10),
    }
    for i in sorted(picks):
        np.testing.assert_allclose(result.vectors[i], minilm.embed([texts[i]])[0], atol=1e-4)


def test_paraphrases_are_closer_than_unrelated_sentences(minilm: Embedder) -> None:
    a, b, c, d = minilm.embed(
        [
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in front of an audience.",
            "The central bank raised interest rates again.",
            "Interest rates were increased by the central bank once more.",
        ]
    )

    assert cosine(a, b) > cosine(a, c) + 0.3
    assert cosine(c, d) > cosine(b, c) + 0.3


def test_rows_are_unit_norm_float32(minilm: Embedder) -> None:
    vectors = minilm.embed(mixed_texts(20, seed=3))

    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_string_is_the_models_vector_for_no_text(minilm: Embedder, minilm_dir: Path) -> None:
    empty, blank = minilm.embed(["", "   \n\t "])

    np.testing.assert_allclose(empty, reference_embedding(minilm_dir, ""), atol=1e-4)
    np.testing.assert_allclose(blank, empty, atol=1e-6)  # both are [CLS] [SEP]
    assert abs(np.linalg.norm(empty) - 1.0) < 1e-5


def test_no_texts_give_an_empty_matrix(minilm: Embedder) -> None:
    result = minilm.embed_with_stats([])

    assert result.vectors.shape == (0, 384)
    assert (result.tokens, result.padded_tokens) == (0, 0)


def test_token_counts(minilm: Embedder) -> None:
    result = minilm.embed_with_stats(["hello world", "hello", "long " * 400])

    assert result.tokens == 4 + 3 + 256  # [CLS] ... [SEP], the long one truncated at 256
    assert result.padded_tokens >= result.tokens


# --- truncation with the real gte-small tokenizer ------------------------------------------------


def test_inputs_are_truncated_at_512_tokens_not_128(tiny_model_dir: Path) -> None:
    embedder = Embedder.load(tiny_model_dir)
    words = [f"word{i}" for i in range(700)]  # several tokens each: far past 512 in all
    full = " ".join(words)
    tail_changed = " ".join(words[:600] + ["different"] * 100)  # differs after token 512 only
    middle_changed = " ".join(words[:80] + ["different"] * 60 + words[140:])  # after token 160
    as_shipped = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))  # truncates at 128
    assert as_shipped.truncation is not None and as_shipped.truncation["max_length"] == 128
    assert as_shipped.encode(middle_changed).ids == as_shipped.encode(full).ids

    vectors = embedder.embed([full, tail_changed, middle_changed])

    assert embedder.max_tokens == 512
    assert embedder.embed_with_stats([full]).tokens == 512
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-6)  # cut at 512 ...
    assert not np.allclose(vectors[2], vectors[0], atol=1e-4)  # ... and not at 128
    np.testing.assert_allclose(vectors[0], reference_embedding(tiny_model_dir, full), atol=1e-4)


def test_gte_small_architecture_model_loads(gte_arch_dir: Path) -> None:
    embedder = Embedder.load(gte_arch_dir)
    result = embedder.embed_with_stats(["word " * 600, "short"])

    assert (embedder.dim, embedder.max_tokens, embedder.pooling) == (384, 512, "mean")
    assert result.tokens == 512 + 3
    assert result.vectors.shape == (2, 384)


# --- batching ------------------------------------------------------------------------------------


def test_token_budget_batching_restores_the_callers_order(tiny_model_dir: Path) -> None:
    embedder = Embedder.load(tiny_model_dir, token_budget=64)
    texts = mixed_texts(60, seed=4)

    result = embedder.embed_with_stats(texts)

    alone = np.stack([embedder.embed([t])[0] for t in texts])
    np.testing.assert_allclose(result.vectors, alone, atol=1e-5)
    naive = len(texts) * max(len(e.ids) for e in embedder._encode(texts))
    assert result.padded_tokens < naive / 2


def test_batches_respect_the_budget_and_cover_every_input(tiny_model_dir: Path) -> None:
    embedder = Embedder.load(tiny_model_dir)
    encodings = embedder._encode(mixed_texts(100, seed=5))

    produced = list(batches(encodings, token_budget=300, padding_allowance=0))

    rows = np.concatenate([b.rows for b in produced])
    assert sorted(rows.tolist()) == list(range(100))
    for batch in produced:
        assert batch.length == max(len(e.ids) for e in batch.encodings)
        real = sum(len(e.ids) for e in batch.encodings)
        if len(batch.rows) > 1:
            assert len(batch.rows) * batch.length <= 300
            assert len(batch.rows) * batch.length <= 1.05 * real
    lengths = [b.length for b in produced]
    assert lengths == sorted(lengths)  # shortest first


def test_short_inputs_are_not_cut_by_the_padding_cap(tiny_model_dir: Path) -> None:
    """Questions of 3 to 14 words: cut where the calls cost least (at most two calls here), not
    by the padding cap (which cut eight into six), until a call holds CALL_TOKENS padded
    tokens; past that the cap applies again. Their vectors are those of one at a time."""
    embedder = Embedder.load(tiny_model_dir)
    words = [
        "what",
        "does",
        "the",
        "pool",
        "hand",
        "out",
        "when",
        "a",
        "search",
        "asks",
        "for",
        "one",
        "twice",
    ]
    questions = [" ".join(words[: 3 + i % 12]) for i in range(8)]
    assert len(list(batches(embedder._encode(questions), 4096, padding_allowance=0))) > 2

    assert len(list(batches(embedder._encode(questions), 4096))) <= 2
    alone = np.stack([embedder.embed([q])[0] for q in questions])
    np.testing.assert_allclose(embedder.embed(questions), alone, atol=1e-5)

    many = embedder._encode(questions * 40)
    produced = list(batches(many, 4096))
    assert sorted(np.concatenate([b.rows for b in produced]).tolist()) == list(range(320))
    for batch in produced:
        padded = len(batch.rows) * batch.length
        real = sum(len(e.ids) for e in batch.encodings)
        assert padded <= CALL_TOKENS or padded <= 1.05 * real


def test_long_inputs_are_batched_by_attention_cells_not_only_tokens(tiny_model_dir: Path) -> None:
    embedder = Embedder.load(tiny_model_dir)
    long_texts = [" ".join(["word"] * 600)] * 6 + [" ".join(["word"] * 200)] * 8
    encodings = embedder._encode(long_texts)

    produced = list(batches(encodings, token_budget=4096, attention_budget=2**18))

    assert sorted(np.concatenate([b.rows for b in produced]).tolist()) == list(range(14))
    for batch in produced:
        assert len(batch.rows) == 1 or len(batch.rows) * batch.length**2 <= 2**18
    # 512-token rows go one per call (4096 tokens would have allowed eight).
    assert [len(b.rows) for b in produced if b.length == 512] == [1] * 6


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["ok", None], r"texts\[1\] is NoneType, not str"),
        ([3], r"texts\[0\] is int, not str"),
        (["ok", b"bytes"], r"texts\[1\] is bytes, not str"),
        ("a single string", "not a single string"),
        (42, "not int"),
    ],
)
def test_non_strings_raise_type_error_naming_the_index(
    tiny_model_dir: Path, texts: object, message: str
) -> None:
    embedder = Embedder.load(tiny_model_dir)

    with pytest.raises(TypeError, match=message):
        embedder.embed(texts)  # type: ignore[arg-type]


def test_lone_surrogates_raise_value_error_naming_the_index(tiny_model_dir: Path) -> None:
    embedder = Embedder.load(tiny_model_dir)

    with pytest.raises(ValueError, match=r"texts\[2\] is not valid Unicode"):
        embedder.embed(["fine", "also fine", "broken \ud800 text"])


def test_hostile_texts_give_unit_vectors(minilm: Embedder, minilm_dir: Path) -> None:
    sentence = "Postgres stores the rows; the worker embeds them. "
    hostile = [
        (sentence * 20_000)[:1_000_000],  # 1 MB
        "x" * 60_000,  # one 60k-character word
        "\x00\x01\x02 control \x07\x1b[31m characters \x7f",
        "emoji 👋🏽🧑‍🚀 and flags 🇫🇷",
        "中文文本，日本語のテキスト，한국어 텍스트",
        "\u200b\u200d\ufeff zero width",
        " " * 50_000 + "late words after a long run of spaces",
    ]

    vectors = minilm.embed(hostile)

    assert vectors.shape == (len(hostile), 384)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for text, row in zip(hostile, vectors, strict=True):
        np.testing.assert_allclose(row, reference_embedding(minilm_dir, text), atol=1e-4)


def test_a_long_text_is_tokenized_from_its_prefix_exactly(tiny_model_dir: Path) -> None:
    """Texts past the prefix limit give the tokens the whole text would (including edge cases)."""
    embedder = Embedder.load(tiny_model_dir)
    limit = embedder.max_tokens * 16
    cases = [
        "abc " * 10_000,  # cut mid-run of words
        "a" * (limit - 3) + " tail " + "b" * 10_000,  # the last kept word straddles the cut
        "word, " * 5_000,  # punctuation splits
        "\n" * (limit + 10) + "only words after the prefix",  # the prefix holds no tokens
    ]
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(512)

    encodings = embedder._encode(cases)

    for text, encoding in zip(cases, encodings, strict=True):
        assert encoding.ids == tokenizer.encode(text).ids


# --- threads and session options -----------------------------------------------------------------


def test_threads_default_to_the_available_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    assert resolve_threads(None) == len(os.sched_getaffinity(0))
    assert resolve_threads(3) == 3
    monkeypatch.setenv("EMBED_THREADS", "5")  # read by the Settings, not here
    assert resolve_threads(None) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="at least 1"):
        resolve_threads(0)


def test_session_options_are_explicit() -> None:
    options = session_options(3)

    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.dynamic_block_base") == "4"


def test_load_uses_threads_argument(tiny_model_dir: Path) -> None:
    assert Embedder.load(tiny_model_dir, threads=1).threads == 1


def test_concurrent_calls_agree_with_sequential_ones(tiny_model_dir: Path) -> None:
    embedder = Embedder.load(tiny_model_dir, threads=1)
    groups = [mixed_texts(30, seed=s) for s in range(4)]
    expected = [embedder.embed(g) for g in groups]
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        results[i] = embedder.embed(groups[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for i, want in enumerate(expected):
        np.testing.assert_allclose(results[i], want, atol=1e-6)


# --- graph inputs and pooling --------------------------------------------------------------------


def test_only_declared_inputs_are_fed(tmp_path: Path, gte_tokenizer_dir: Path) -> None:
    path = modelgen.write_model_dir(
        tmp_path / "no-types",
        tokenizer_dir=gte_tokenizer_dir,
        with_token_type_ids=False,
        **modelgen.TINY,
    )
    embedder = Embedder.load(path)

    vector = embedder.embed(["no token type ids here"])[0]

    np.testing.assert_allclose(
        vector, reference_embedding(path, "no token type ids here"), atol=1e-5
    )


def test_cls_pooling_where_the_model_says_so(tmp_path: Path, gte_tokenizer_dir: Path) -> None:
    path = modelgen.write_model_dir(
        tmp_path / "cls", tokenizer_dir=gte_tokenizer_dir, pooling="cls", **modelgen.TINY
    )
    embedder = Embedder.load(path)
    text = "pool the first token"

    assert embedder.pooling == "cls"
    np.testing.assert_allclose(
        embedder.embed([text])[0], reference_embedding(path, text, pooling="cls"), atol=1e-5
    )
    assert cosine(embedder.embed([text])[0], reference_embedding(path, text)) < 0.999


def test_a_corrupt_model_file_raises_model_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, path)
    (path / "model.onnx").write_bytes(b"\x00 not a protobuf")

    with pytest.raises(exceptions.ModelError, match="cannot load"):
        Embedder.load(path)


def test_a_model_of_the_wrong_dimension_for_its_name_is_refused(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gte-small").mkdir()
    for name in ("model.onnx", "tokenizer.json", "config.json"):
        shutil.copy(tiny_model_dir / name, tmp_path / "gte-small" / name)
    location = ModelLocation.of(str(tmp_path))

    with pytest.raises(
        exceptions.ModelError, match="32-dimensional vectors, but gte-small has 384"
    ):
        Embedder.load("gte-small", location=location)


# --- int8 ----------------------------------------------------------------------------------------


def test_int8_is_quantized_once_cached_and_close_to_fp32(
    minilm: Embedder, minilm_dir: Path, embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    int8 = Embedder.load(minilm_dir, variant="int8", location=ModelLocation.of(cache_dir=embed_env))

    assert int8.variant == "int8"
    assert int8.model_file.is_relative_to(embed_env / "int8")
    assert int8.model_file.stat().st_size < 0.7 * minilm.model_file.stat().st_size
    texts = mixed_texts(40, seed=6)
    cosines = np.sum(int8.embed(texts) * minilm.embed(texts), axis=1)
    assert cosines.mean() > 0.98 and cosines.min() > 0.95

    def fail(*args: object) -> None:
        raise AssertionError("the cached int8 model should have been reused")

    monkeypatch.setattr(quantization, "quantize", fail)
    again = Embedder.load(
        minilm_dir, variant="int8", location=ModelLocation.of(cache_dir=embed_env)
    )
    assert again.model_file == int8.model_file


def test_int8_uses_the_models_own_quantized_file(
    tmp_path: Path, tiny_model_dir: Path, embed_env: Path
) -> None:
    path = tmp_path / "shipped"
    shutil.copytree(tiny_model_dir, path)
    shutil.copy(path / "model.onnx", path / "model_quantized.onnx")

    embedder = Embedder.load(path, variant="int8", location=ModelLocation.of(cache_dir=embed_env))

    assert embedder.model_file == path / "model_quantized.onnx"
    assert not (embed_env / "int8").exists()


def test_a_changed_source_model_is_quantized_again(
    tmp_path: Path, gte_tokenizer_dir: Path, embed_env: Path
) -> None:
    path = modelgen.write_model_dir(
        tmp_path / "m", tokenizer_dir=gte_tokenizer_dir, **modelgen.TINY
    )
    first = Embedder.load(
        path, variant="int8", location=ModelLocation.of(cache_dir=embed_env)
    ).model_file
    modelgen.write_model_dir(path, tokenizer_dir=gte_tokenizer_dir, seed=1, **modelgen.TINY)

    second = Embedder.load(
        path, variant="int8", location=ModelLocation.of(cache_dir=embed_env)
    ).model_file

    assert first != second and first.is_file() and second.is_file()
    assert not (path / "model_quantized.onnx").exists()  # never written into the model directory


def test_unknown_variant_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="variant"):
        Embedder.load(tiny_model_dir, variant="fp16")  # type: ignore[arg-type]


# Run in a process of its own: the tokenizers library starts its thread pool once per process,
# on the first `encode_batch` of any test before this one.
_TOKENIZE_HERE = """
import os, sys
from pathlib import Path
from worker.models.embedder import Embedder
from worker.models.files import ModelLocation
from worker.models.reranker import CrossEncoder
from worker.pipeline.chunking import Splitter

model, reranker = Path(sys.argv[1]), Path(sys.argv[2])
embedder = Embedder.load(model, threads=1)
cross_encoder = CrossEncoder.load(reranker, location=ModelLocation.of(), threads=1)
splitter = Splitter.from_file(model / "tokenizer.json", 64, 8)
before = len(os.listdir("/proc/self/task"))
texts = [f"question number {i} about the thing" for i in range(8)]
embedder.embed(texts)
cross_encoder.score("which thing", texts)
splitter.count_tokens(texts)
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_batches_are_tokenized_on_the_calling_thread(
    tiny_model_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    """encode_batch hands a batch to the tokenizers library's thread pool, whose wake-ups
    cost twice the CPU of tokenizing questions one after another and took cores from the
    model's threads (worker/models/onnx.py: encode_each): no thread is started for it."""
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    found = subprocess.run(
        [sys.executable, "-c", _TOKENIZE_HERE, str(tiny_model_dir), str(tiny_cross_encoder_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert found.stdout.split()[-1] == "0", found.stdout + found.stderr
