"""Text in, unit vectors out: a WordPiece tokenizer and a BERT encoder on the CPU (onnxruntime).

The numerics follow Supabase's runtime for gte-small (and sentence-transformers): the tokenizer
comes from `tokenizer.json` with its baked-in truncation and fixed padding replaced (truncate at
`max_tokens`, pad each batch to its longest input), only the inputs the graph declares are fed,
hidden states are mean-pooled over the attention mask (or the CLS token is taken, where the model
says so), and each vector is L2-normalized.

For speed, inputs are sorted by token count and cut into batches by a token budget (rows times
padded length) with at most 5% padding per batch, so short texts are not padded to the length of
long ones; results come back in the caller's order. Tokenization of a batch of rows
(`encode_batch`; questions are tokenized on the calling thread: onnx.encode_each) and inference
(`InferenceSession.run`, 90%+ of the time) release the GIL, and pooling is vectorized numpy, so
other threads (database I/O) keep running while a batch is embedded.

Empty and blank strings are embedded like any other text: they tokenize to `[CLS] [SEP]` and give
the model's (unit-norm, deterministic) vector for empty input, as sentence-transformers and
Supabase's runtime do. The library does not invent a zero vector or an error for them; the worker
never sends them (blank content clears the embedding instead).
"""

from __future__ import annotations

import logging
import os
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Self

import numpy as np
import numpy.typing as npt

from worker import exceptions
from worker.models import catalog, files, onnx, priority, quantization
from worker.models.batching import DEFAULT_TOKEN_BUDGET, Encoding, TokenBatch, batches, pad_batch

logger = logging.getLogger(__name__)

Variant = Literal["fp32", "int8"]
FloatMatrix = npt.NDArray[np.float32]

# Texts longer than this many characters per allowed token are tokenized from a prefix first:
# the tokenizer would otherwise turn all of a 1 MB string into tokens only to keep 512 of them.
PREFIX_CHARS_PER_TOKEN = 16


@dataclass(frozen=True, eq=False)
class EmbedResult:
    """Vectors in the caller's order, with the token counts of the work done."""

    vectors: FloatMatrix  # (n, dim) float32, rows L2-normalized
    tokens: int  # real tokens, special tokens included, after truncation
    padded_tokens: int  # tokens fed to the model, padding included


class TextModel(Protocol):
    """What callers that only embed need of a model, local (Embedder) or remote
    (worker/models/remote/client.py: RemoteModel)."""

    name: str
    dim: int
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> FloatMatrix: ...

    def embed_with_stats(self, texts: Sequence[str]) -> EmbedResult: ...


class Embedder(onnx.OnnxModel):
    """A loaded model. Build it with `Embedder.load`; it is safe to share between threads."""

    def __init__(
        self,
        *,
        name: str,
        variant: Variant,
        model_file: Path,
        session: Any,
        tokenizer: Any,
        max_tokens: int,
        pooling: catalog.Pooling,
        threads: int,
        hidden_size: int | None = None,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        super().__init__(
            name=name,
            model_file=model_file,
            session=session,
            tokenizer=tokenizer,
            max_tokens=max_tokens,
            threads=threads,
            token_budget=token_budget,
        )
        self.variant = variant
        self.pooling = pooling
        # A session per thread priority (worker/models/priority.py): each made by a thread of
        # that priority, so that its intra-op threads have it too. The first is `session`.
        self._sessions: dict[int, Any] = {priority.current(): self._session}
        self._sessions_lock = threading.Lock()
        self.turns = priority.QuestionsFirst(model=name)
        self.dim: int = onnx.output_dim(session, self._output) or hidden_size or self._probe_dim()

    def _lane_session(self) -> Any:
        """The session of this thread's priority, made by this thread on its first call."""
        nice = priority.current()
        session = self._sessions.get(nice)
        if session is None:
            with self._sessions_lock:
                session = self._sessions.get(nice)
                if session is None:
                    session = onnx.create_session(self.model_file, self.threads)
                    self._sessions[nice] = session
                    logger.info("%s: a session for threads at nice %d", self.name, nice)
        return session

    def __repr__(self) -> str:
        return (
            f"Embedder(name={self.name!r}, variant={self.variant!r}, dim={self.dim}, "
            f"max_tokens={self.max_tokens}, pooling={self.pooling!r}, threads={self.threads})"
        )

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        variant: Variant = "fp32",
        threads: int | None = None,
        location: files.ModelLocation | None = None,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> Self:
        """Load a model directory by path, or a model by name from `location` (its search path,
        then its cache; default: ~/.cache/embed-worker only). The worker and the CLI pass
        `settings.model_location`, which holds EMBED_MODEL_PATH and EMBED_CACHE_DIR.

        Never opens a network connection: a model that is not on disk raises `ModelNotFound`
        saying how to get it. `variant="int8"` uses the model's `model_quantized.onnx`, else an
        int8 copy quantized on first use and kept in the location's cache. `threads` (the
        Settings' EMBED_THREADS) defaults to the cores this process may run on.
        """
        if variant not in ("fp32", "int8"):
            raise ValueError(f"variant must be 'fp32' or 'int8', not {variant!r}")
        if location is None:
            location = files.ModelLocation.of()
        spec = os.fspath(name_or_path)
        directory = location.locate(spec)
        name = spec if spec in catalog.REGISTRY else directory.name
        info = files.ModelDir.read(directory, name=name)
        if variant == "int8" and info.int8_file is not None:
            model_file = info.int8_file
        elif info.fp32_file is None:
            raise exceptions.ModelNotFound(
                f"{directory} holds only int8 weights ({info.int8_file}): run it with "
                f"EMBED_MODEL_VARIANT=int8, or fetch the fp32 weights with "
                f"`embed-worker model download {name} --variant fp32`"
            )
        elif variant == "int8":
            model_file = quantization.cached_int8(info.fp32_file, cache_dir=location.cache)
        else:
            model_file = info.fp32_file
        n_threads = onnx.resolve_threads(threads)
        embedder = cls(
            name=name,
            variant=variant,
            model_file=model_file,
            session=onnx.create_session(model_file, n_threads),
            tokenizer=onnx.load_tokenizer(info.tokenizer_file, max_tokens=info.max_tokens),
            max_tokens=info.max_tokens,
            pooling=info.pooling,
            threads=n_threads,
            hidden_size=info.hidden_size,
            token_budget=token_budget,
        )
        expected = catalog.REGISTRY[name].dim if name in catalog.REGISTRY else None
        if expected is not None and embedder.dim != expected:
            raise exceptions.ModelError(
                f"{model_file} produces {embedder.dim}-dimensional vectors, but {name} has "
                f"{expected}: the directory does not hold {name}"
            )
        logger.info(
            "loaded %s (%s, %d-d, %s pooling, %d max tokens, %d threads) from %s",
            name,
            variant,
            embedder.dim,
            embedder.pooling,
            embedder.max_tokens,
            n_threads,
            model_file,
        )
        return embedder

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """Vectors for `texts`: float32, shape (len(texts), dim), each row of unit length."""
        return self.embed_with_stats(texts).vectors

    def embed_with_stats(self, texts: Sequence[str]) -> EmbedResult:
        """Like `embed`, with the real and padded token counts of the work (for metrics)."""
        checked = _checked_texts(texts)
        vectors = np.zeros((len(checked), self.dim), dtype=np.float32)
        if not checked:
            return EmbedResult(vectors=vectors, tokens=0, padded_tokens=0)
        tokens = padded = 0
        for batch in batches(self._encode(checked), self.turns.token_budget(self.token_budget)):
            vectors[batch.rows] = self._run(batch)
            tokens += sum(len(e.ids) for e in batch.encodings)
            padded += len(batch.encodings) * batch.length
        return EmbedResult(vectors=vectors, tokens=tokens, padded_tokens=padded)

    def _encode(self, texts: list[str]) -> list[Encoding]:
        """Encodings truncated at max_tokens; very long texts are tokenized from a prefix."""
        limit = self.max_tokens * PREFIX_CHARS_PER_TOKEN
        heads = [t if len(t) <= limit else t[:limit] for t in texts]
        try:
            encodings: list[Encoding] = onnx.encode_each(self._tokenizer, heads)
        except TypeError:
            _raise_for_invalid_unicode(texts)
            raise
        for i, text in enumerate(texts):
            if len(text) > limit and not _prefix_suffices(heads[i], encodings[i]):
                encodings[i] = self._tokenizer.encode(text)  # the prefix did not fill the window
        return encodings

    def _run(self, batch: TokenBatch) -> FloatMatrix:
        """One inference call: pad, feed the declared inputs, pool, normalize."""
        hidden, mask = self._hidden_states(batch)
        pooled = cls_pool(hidden) if self.pooling == "cls" else mean_pool(hidden, mask)
        return l2_normalize(pooled)

    def _hidden_states(
        self, batch: TokenBatch
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        ids, mask, type_ids = pad_batch(batch, self._pad_id)
        session = self._lane_session()
        feed = onnx.feed(self._inputs, ids, mask, type_ids)
        with self.turns.call():
            (hidden,) = session.run([self._output], feed)
        return hidden, mask

    def _probe_dim(self) -> int:
        """Hidden size from one tiny inference, for graphs that leave it symbolic."""
        encodings: list[Encoding] = onnx.encode_each(self._tokenizer, [""])
        hidden, _ = self._hidden_states(TokenBatch(np.arange(1), encodings, len(encodings[0].ids)))
        return int(hidden.shape[-1])


# --- pooling and normalization -------------------------------------------------------------------


def mean_pool(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> FloatMatrix:
    """Average of the hidden states of real tokens (attention mask 1), per row."""
    weights = mask.astype(np.float32)
    summed: FloatMatrix = np.matmul(weights[:, None, :], hidden)[:, 0, :]  # one batched BLAS call
    counts = np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1e-9))
    pooled: FloatMatrix = summed / counts
    return pooled


def cls_pool(hidden: npt.NDArray[np.float32]) -> FloatMatrix:
    """The hidden state of the first ([CLS]) token, per row."""
    return np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)


def l2_normalize(vectors: FloatMatrix) -> FloatMatrix:
    """Rows scaled to unit length (an all-zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalized: FloatMatrix = vectors / np.maximum(norms, np.float32(1e-12))
    return normalized


# --- loading -------------------------------------------------------------------------------------
# --- input checks --------------------------------------------------------------------------------


def _checked_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str | bytes):
        raise TypeError(
            "texts must be a sequence of strings, not a single string; wrap it in a list"
        )
    try:
        items = list(texts)
    except TypeError:
        raise TypeError(
            f"texts must be a sequence of strings, not {type(texts).__name__}"
        ) from None
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    return items


def _raise_for_invalid_unicode(texts: list[str]) -> None:
    """The tokenizer rejects strings that cannot be UTF-8 (lone surrogates): name the culprit."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"texts[{i}] is not valid Unicode: {exc.reason} at character {exc.start}"
            ) from None


def _prefix_suffices(head: str, encoding: Encoding) -> bool:
    """Whether tokenizing only `head` kept exactly the tokens the whole text would keep.

    True when truncation happened within the head and the word holding the last kept token ends
    inside the head: the BERT pre-tokenizer splits at whitespace and punctuation, so every token up
    to that split is the same with or without the rest of the text.
    """
    if not encoding.overflowing:
        return False  # the head has fewer tokens than the window: the rest of the text matters
    kept = [
        end
        for (_, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
        if not special
    ]
    if not kept:
        return False
    return any(_splits_words(ch) for ch in head[kept[-1] :])


def _splits_words(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")
