"""A cross-encoder: a (question, passage) pair in, one relevance score out, on the CPU.

The second stage of retrieval (worker/retrieval/rerank.py): a bi-encoder (the embedder) finds
candidates by comparing vectors made apart; a cross-encoder reads the question and each passage
together, which ranks far better and costs one model call per candidate, so it only reorders the
top few dozen. The model is a BERT sequence classifier exported to ONNX (what
sentence-transformers' CrossEncoder and the ms-marco rerankers are): inputs as the embedder's,
the question as segment 0 and the passage as segment 1, output `logits` of shape (pairs, 1).

It loads through the embedders' machinery: a directory found by name on the model location
(EMBED_MODEL_PATH, then the cache) or given by path, the same ONNX Runtime session options and
threads, the same token-budget batching. Scores are the raw logits: comparable within one
question, not across questions.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from worker import exceptions
from worker.models import files, onnx
from worker.models.batching import Encoding, batches, pad_batch
from worker.models.embedder import PREFIX_CHARS_PER_TOKEN
from worker.models.remote import keys
from worker.models.remote.keys import ApiKey
from worker.models.remote.rerank_spec import RerankerSpec
from worker.models.remote.reranker import RemoteReranker
from worker.secret import Secret

logger = logging.getLogger(__name__)

Scores = npt.NDArray[np.float32]


class CrossEncoder(onnx.OnnxModel):
    """A loaded cross-encoder. Build it with `CrossEncoder.load`; safe to share between threads."""

    def _output_of(self, session: Any, model_file: Path) -> str:
        return _score_output(session, model_file)

    def __repr__(self) -> str:
        return (
            f"CrossEncoder(name={self.name!r}, max_tokens={self.max_tokens}, "
            f"threads={self.threads})"
        )

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        location: files.ModelLocation,
        threads: int | None = None,
    ) -> CrossEncoder:
        """Load a cross-encoder directory by path, or by name from `location`. Never opens a
        network connection: a model that is not on disk raises ModelNotFound."""
        spec = os.fspath(name_or_path)
        try:
            directory = location.locate(spec)
        except exceptions.ModelNotFound:
            if files.looks_like_path(spec) or location.incomplete(spec):
                raise  # a path, or a directory that lacks a file: said as for any model
            # (not the embedding models' catalog and `model download`, which has no reranker)
            where = ", ".join(str(p) for p in location.search_dirs())
            raise exceptions.ModelNotFound(
                f"no cross-encoder directory {spec}/ (looked in {where})"
            ) from None
        info = files.ModelDir.read(directory, name=directory.name)
        if info.fp32_file is None:
            raise exceptions.ModelNotFound(f"{directory} holds no fp32 model.onnx")
        n_threads = onnx.resolve_threads(threads)
        tokenizer = onnx.load_tokenizer(info.tokenizer_file, max_tokens=info.max_tokens)
        # A pair is cut from the longer side first: a long passage loses its tail, never the
        # question.
        tokenizer.enable_truncation(max_length=info.max_tokens, strategy="longest_first")
        model = cls(
            name=info.name,
            model_file=info.fp32_file,
            session=onnx.create_session(info.fp32_file, n_threads),
            tokenizer=tokenizer,
            max_tokens=info.max_tokens,
            threads=n_threads,
        )
        logger.info(
            "loaded cross-encoder %s (%d max tokens, %d threads) from %s",
            model.name,
            model.max_tokens,
            n_threads,
            info.fp32_file,
        )
        return model

    def score(self, question: str, passages: Sequence[str]) -> Scores:
        """One score per passage, in the passages' order: higher is more relevant."""
        if not isinstance(question, str) or any(not isinstance(p, str) for p in passages):
            raise TypeError("score() takes a question and a sequence of passages, all str")
        scores = np.zeros(len(passages), dtype=np.float32)
        if not passages:
            return scores
        # Only a passage's head is read (truncation keeps its first tokens): a row of megabytes
        # is not tokenized whole for the few hundred tokens kept, as the embedder does not.
        limit = self.max_tokens * PREFIX_CHARS_PER_TOKEN
        encodings: list[Encoding] = onnx.encode_each(
            self._tokenizer, [(question, passage[:limit]) for passage in passages]
        )
        for batch in batches(encodings, self.token_budget):
            ids, mask, type_ids = pad_batch(batch, self._pad_id)
            feed = onnx.feed(self._inputs, ids, mask, type_ids)
            (logits,) = self._session.run([self._output], feed)
            scores[batch.rows] = np.asarray(logits, dtype=np.float32).reshape(len(batch.rows))
        return scores


def _score_output(session: Any, model_file: Path) -> str:
    """The graph's (pairs, 1) output: `logits` where it is named so."""
    outputs = session.get_outputs()
    chosen = next((o for o in outputs if o.name == "logits"), outputs[0] if outputs else None)
    shape = list(chosen.shape) if chosen is not None else []
    if chosen is None or len(shape) != 2 or shape[1] != 1:
        found = ", ".join(f"{o.name} {list(o.shape)}" for o in outputs) or "none"
        raise exceptions.ModelError(
            f"{model_file}: not a cross-encoder (expected one score per pair, an output of shape "
            f"(pairs, 1) such as `logits`; the graph has {found})"
        )
    return str(chosen.name)


class Reranker(Protocol):
    """What the rerank stage needs of a cross-encoder, local (CrossEncoder) or remote
    (worker/models/remote/reranker.py: RemoteReranker)."""

    name: str

    def score(self, question: str, passages: Sequence[str]) -> Scores: ...


class LoadedRerankers:
    """The rerankers this process uses, each built once, on its first search: a cross-encoder
    directory loaded from the model location, or a remote reranker built from its registration
    (embeddings.rerankers), which the search reads on its own connection and hands to get(). A
    registered name wins over a directory of the same name; a changed registration builds a new
    RemoteReranker (the old one closed), a dropped one forgets it. A cross-encoder that cannot be
    loaded is tried again by the next search that names it (it may be copied in meanwhile)."""

    def __init__(
        self,
        location: files.ModelLocation,
        threads: int | None = None,
        *,
        api_key: ApiKey | None = None,  # remote rerankers' keys: Settings.api_key
    ) -> None:
        self._location = location
        self._threads = threads
        self._api_key: ApiKey = api_key or _no_keys
        self._loaded: dict[str, Reranker] = {}
        self._remote: dict[str, RemoteReranker] = {}
        self._plain_http = keys.PlainHttpRefusals()  # each logged once
        self._lock = threading.Lock()

    def get(self, name: str, registration: RerankerSpec | None = None) -> Reranker:
        """The reranker `name`: remote when `registration` (its embeddings.rerankers row) is
        given, else the cross-encoder directory of that name. ModelError when unavailable."""
        if registration is not None:
            return self._remote_reranker(registration)
        with self._lock:
            gone = self._remote.pop(name, None)  # unregistered since: a directory now, if any
        if gone is not None:
            gone.close()
        if files.looks_like_path(name):  # searches name rerankers; only the operator has paths
            raise exceptions.ModelNotFound(
                f"{name!r}: a reranker is named (a directory on EMBED_MODEL_PATH, or a remote "
                "reranker registered with embeddings.register_reranker()), not a path"
            )
        with self._lock:  # one load per name, however many searches ask at once
            found = self._loaded.get(name)
            if found is None:
                found = self._loaded[name] = CrossEncoder.load(
                    name, location=self._location, threads=self._threads
                )
            return found

    def close(self) -> None:
        """Closes the remote rerankers' connections and threads."""
        with self._lock:
            remote, self._remote = list(self._remote.values()), {}
        for reranker in remote:
            reranker.close()

    def _remote_reranker(self, spec: RerankerSpec) -> RemoteReranker:
        """The RemoteReranker of `spec`, rebuilt when the registration changed."""
        # (a registration register_reranker() refuses, made by hand)
        self._plain_http.check(spec, f"remote reranker {spec.name}")
        with self._lock:
            found = self._remote.get(spec.name)
            if found is not None and found.spec == spec:
                return found
            built = self._remote[spec.name] = RemoteReranker(spec, api_key=self._api_key)
        if found is not None:
            found.close()
        logger.info("remote reranker %s: %s", spec.name, spec.describe())
        return built


def _no_keys(credential: str) -> tuple[Secret | None, str]:
    """The key lookup of a LoadedRerankers given none: no key anywhere."""
    return None, f"a key lookup (this process was given none for {credential!r})"
