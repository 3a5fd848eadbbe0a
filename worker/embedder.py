"""TEMPORARY development stand-in (replaced by the embedder branch)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from worker import exceptions


@dataclass(frozen=True)
class EmbedResult:
    vectors: np.ndarray[Any, np.dtype[np.float32]]
    tokens: int
    padded_tokens: int


class Embedder:
    def __init__(self, path: Path, threads: int | None) -> None:
        self.name = path.name
        self.variant = "fp32"
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        cfg = json.loads((path / "config.json").read_text())
        self.max_tokens = (
            256 if (path / "sentence_bert_config.json").exists() else cfg["max_position_embeddings"]
        )
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        model = path / "model.onnx"
        if not model.exists():
            model = path / "onnx" / "model.onnx"
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.dim = int(cfg["hidden_size"])

    @classmethod
    def load(cls, name: str, *, variant: str = "fp32", threads: int | None = None) -> Embedder:
        for d in os.environ.get("EMBED_MODEL_PATH", "").split(":"):
            if d and (Path(d) / name).is_dir():
                return cls(Path(d) / name, threads)
        if Path(name).is_dir():
            return cls(Path(name), threads)
        raise exceptions.ModelNotFound(f"model {name!r} not found")

    def embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self.embed_with_stats(texts).vectors

    def embed_with_stats(self, texts: list[str]) -> EmbedResult:
        for t in texts:
            if not isinstance(t, str):
                raise TypeError("texts must be strings")
        encs = self.tokenizer.encode_batch(texts)
        n = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), n), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        out = self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]
        m = mask[..., None].astype(np.float32)
        pooled = (out * m).sum(1) / m.sum(1)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        return EmbedResult(pooled.astype(np.float32), int(mask.sum()), int(mask.size))
