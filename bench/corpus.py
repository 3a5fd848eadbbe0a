"""A benchmark corpus of real English text that nobody on this project wrote.

The texts are the docstrings of the Python standard library (modules, classes and functions),
read with `ast` from the interpreter's own source files, so nothing is imported or executed.
They are technical prose of naturally mixed length: one-line summaries, paragraph-long function
docs and module overviews that run past 512 tokens. The selection is deterministic for a given
Python version (sorted files, a seeded sample), and the version is recorded with every result.
"""

from __future__ import annotations

import ast
import functools
import random
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

# Test suites and vendored third-party code are not the standard library's own prose.
EXCLUDED_PARTS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})
MIN_CHARS = 20  # shorter docstrings are mostly "Deprecated." or "Return self."


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if not EXCLUDED_PARTS.intersection(path.relative_to(root).parts):
            yield path


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return  # a few files are templates or deliberately invalid
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= MIN_CHARS:
                yield doc


def stdlib_docstrings() -> list[str]:
    """Every distinct docstring of the standard library, in a stable order (a new list: the
    caller may change it)."""
    return list(_stdlib_docstrings())


@functools.cache  # reading the standard library's sources takes seconds
def _stdlib_docstrings() -> tuple[str, ...]:
    seen: set[str] = set()
    texts: list[str] = []
    for path in _source_files(stdlib_dir()):
        for doc in _docstrings(path):
            if doc not in seen:
                seen.add(doc)
                texts.append(doc)
    return tuple(texts)


def load(n: int = 1000, *, seed: int = 0) -> list[str]:
    """`n` docstrings sampled without replacement with a fixed seed (all of them if fewer)."""
    texts = stdlib_docstrings()
    if n >= len(texts):
        return texts
    return random.Random(seed).sample(texts, n)


def rows(n: int, *, seed: int | None = None) -> list[str]:
    """`n` distinct texts of real prose, however many `n` is: the docstrings (sampled with
    `seed`, or in their stable order), cycled past their number (about 8,000), each text
    marked with its row number so that no two rows are the same text."""
    pool = stdlib_docstrings()
    if seed is not None:
        random.Random(seed).shuffle(pool)
    return [f"{pool[i % len(pool)]} ({i})" for i in range(n)]


def token_lengths(texts: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    """Token count of each text (special tokens included, no truncation applied by us)."""
    return np.array([len(e.ids) for e in tokenizer.encode_batch(list(texts))], dtype=np.int64)


def length_distribution(lengths: np.ndarray) -> dict[str, float]:
    """Summary of a token-length array: count, mean and percentiles."""
    if lengths.size == 0:
        return {"count": 0}
    q = np.percentile(lengths, [0, 10, 25, 50, 75, 90, 99, 100])
    names = ["min", "p10", "p25", "p50", "p75", "p90", "p99", "max"]
    summary: dict[str, float] = {
        "count": int(lengths.size),
        "mean": round(float(lengths.mean()), 1),
    }
    summary.update({name: float(v) for name, v in zip(names, q, strict=True)})
    return summary


def describe() -> str:
    return f"docstrings of the Python {sys.version.split()[0]} standard library"


def fixed_length(n: int, tokens: int, tokenizer_file: Path, *, seed: int = 0) -> list[str]:
    """`n` texts of about `tokens` tokens each ([CLS] and [SEP] included), cut from the corpus:
    the workload of the quoted ceilings (gte-small at 128-token inputs)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    words = " ".join(load(5000, seed=seed)).split()
    texts: list[str] = []
    start, step = 0, tokens  # words per text, adjusted so each lands on the target
    while len(texts) < n and start < len(words):
        chunk = words[start : start + step]
        ids = tokenizer.encode(" ".join(chunk)).ids
        while len(ids) > tokens and len(chunk) > 1:
            chunk = chunk[: max(1, len(chunk) * tokens // len(ids))]
            ids = tokenizer.encode(" ".join(chunk)).ids
        texts.append(" ".join(chunk))
        start += len(chunk)
    return texts
