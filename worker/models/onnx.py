"""Loading a model directory's files: the ONNX Runtime session, its graph, and the tokenizer.

Every session option is set on purpose (Postgres shares the machine); the graph's inputs and
outputs are checked here, so a model the embedder cannot feed fails at load with its file named.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker import exceptions
from worker.models.batching import DEFAULT_TOKEN_BUDGET

DYNAMIC_BLOCK_BASE = 4  # onnxruntime's dynamic block sizing; 0 would turn it off
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
ONNX_INT_TYPES: dict[str, type[np.signedinteger[Any]]] = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def resolve_threads(threads: int | None) -> int:
    """`threads` (EMBED_THREADS, from the Settings), else the cores this process may run on."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        return threads
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def session_options(threads: int) -> Any:
    """onnxruntime options, every one set on purpose: Postgres shares the machine."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads sleep instead of spinning: spinning burns the cores Postgres needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # A parallel section ends with its slowest thread, and a Postgres backend (or a second
    # batch of questions) preempts one of ours now and then: with dynamic blocks the threads
    # still running take a preempted thread's remaining work in small blocks (docs/performance.md,
    # "Figures behind the code's choices": 8 clients 0.855 of the caller's rate against 0.838).
    options.add_session_config_entry("session.dynamic_block_base", str(DYNAMIC_BLOCK_BASE))
    # Shapes change with every batch: memory patterns cached per shape only grow the arena
    # (docs/performance.md, "Figures behind the code's choices").
    options.enable_mem_pattern = False
    options.log_severity_level = 3  # errors only; onnxruntime's warnings go to stderr otherwise
    return options


def create_session(model_file: Path, threads: int) -> Any:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise exceptions.ModelError(
            f"onnxruntime {ort.__version__} lacks {', '.join(missing)} "
            f"(it offers {', '.join(ort.get_available_providers())})"
        )
    try:
        return ort.InferenceSession(
            str(model_file), sess_options=session_options(threads), providers=providers
        )
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise exceptions.ModelError(f"cannot load {model_file}: {exc}") from exc


def load_tokenizer(path: Path, *, max_tokens: int | None) -> Any:
    """The model's tokenizer, without padding, truncated at `max_tokens`; with None, not
    truncated at all (the chunk splitter counts a document's tokens in full)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise exceptions.ModelError(f"cannot load {path}: {exc}") from exc
    # tokenizer.json may carry a fixed padding and a shorter truncation (gte-small's: 128 and 128).
    tokenizer.no_padding()
    if max_tokens is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


# Characters up to which a call's inputs are tokenized on the calling thread (encode_each):
# about 0.7 ms of tokenizing, holding the GIL; more go to the tokenizers library's own threads.
SERIAL_CHARS = 2048


def encode_each(
    tokenizer: Any, inputs: Sequence[str | tuple[str, str]], *, add_special_tokens: bool = True
) -> list[Any]:
    """Each input's encoding (a text, or a (question, passage) pair), as `encode_batch` makes
    them without padding. Inputs of SERIAL_CHARS characters or fewer in all (questions) are
    tokenized on the calling thread one after another: `encode_batch` hands two or more to
    the tokenizers library's thread pool, whose threads woke and slept about 15 times a batch
    of 4 questions and spent twice the CPU of tokenizing them here (239 against 124 us); at 8
    clients of POST /search those wake-ups were a quarter of the worker's context switches,
    each taking a core from the model's threads or a database backend (bench/results/history/
    search.md, 2026-11-28). Longer inputs (the pipeline's batches of rows) keep `encode_batch`:
    it releases the GIL while it works, which tokenizing one input at a time does not."""
    if sum(len(i) if isinstance(i, str) else len(i[0]) + len(i[1]) for i in inputs) > SERIAL_CHARS:
        return list(tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens))
    encode = tokenizer.encode
    return [
        encode(*item, add_special_tokens=add_special_tokens)
        if isinstance(item, tuple)
        else encode(item, add_special_tokens=add_special_tokens)
        for item in inputs
    ]


def pad_id(tokenizer: Any) -> int:
    pad = tokenizer.token_to_id("[PAD]")
    return int(pad) if pad is not None else 0


def graph_inputs(session: Any, model_file: Path) -> dict[str, type[np.signedinteger[Any]]]:
    inputs: dict[str, type[np.signedinteger[Any]]] = {}
    for arg in session.get_inputs():
        if arg.name not in MODEL_INPUTS or arg.type not in ONNX_INT_TYPES:
            raise exceptions.ModelError(
                f"{model_file}: unsupported graph input {arg.name} ({arg.type}); "
                f"expected int64 inputs among {', '.join(MODEL_INPUTS)}"
            )
        inputs[arg.name] = ONNX_INT_TYPES[arg.type]
    if "input_ids" not in inputs:
        raise exceptions.ModelError(f"{model_file}: the graph has no input_ids input")
    return inputs


def hidden_state_output(session: Any, model_file: Path) -> str:
    outputs = session.get_outputs()
    for out in outputs:
        if out.name == "last_hidden_state":
            return str(out.name)
    for out in outputs:
        if len(out.shape) == 3:
            return str(out.name)
    raise exceptions.ModelError(f"{model_file}: no (batch, tokens, hidden) output to pool")


def output_dim(session: Any, output: str) -> int | None:
    shape = next(o.shape for o in session.get_outputs() if o.name == output)
    return shape[-1] if isinstance(shape[-1], int) and shape[-1] > 0 else None


def feed(
    inputs: dict[str, type[np.signedinteger[Any]]],
    ids: np.ndarray[Any, Any],
    mask: np.ndarray[Any, Any],
    type_ids: np.ndarray[Any, Any],
) -> dict[str, np.ndarray[Any, Any]]:
    """The graph's declared inputs (graph_inputs()) from a padded batch, in their types;
    position_ids, where declared, 0 .. length-1 on every row."""
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}
    fed: dict[str, np.ndarray[Any, Any]] = {}
    for name, dtype in inputs.items():
        if name == "position_ids":
            positions = np.arange(ids.shape[1], dtype=dtype)
            fed[name] = np.ascontiguousarray(np.broadcast_to(positions, ids.shape))
        else:
            fed[name] = arrays[name].astype(dtype, copy=False)
    return fed


class OnnxModel:
    """A BERT-style graph loaded with its tokenizer, as the embedder and the cross-encoder keep
    it: the inputs it declares, the output read (`_output_of`), the pad token, and the token
    budget its batches are cut by."""

    def __init__(
        self,
        *,
        name: str,
        model_file: Path,
        session: Any,
        tokenizer: Any,
        max_tokens: int,
        threads: int,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        if token_budget < 1:
            raise ValueError(f"token_budget must be positive, not {token_budget}")
        self.name = name
        self.model_file = model_file
        self.max_tokens = max_tokens
        self.threads = threads
        self.token_budget = token_budget
        self._session = session  # the one it was loaded with
        self._tokenizer = tokenizer
        self._inputs = graph_inputs(session, model_file)
        self._output = self._output_of(session, model_file)
        self._pad_id = pad_id(tokenizer)

    def _output_of(self, session: Any, model_file: Path) -> str:
        """The graph's output this model reads: its hidden states."""
        return hidden_state_output(session, model_file)
