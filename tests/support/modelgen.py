"""Random-weight BERT encoders as ONNX model directories, built without torch.

The graph is the one a Hugging Face BERT export computes: word + position + token-type
embeddings, LayerNorm, then N layers of multi-head self-attention (with the attention mask) and a
GELU feed-forward block, each followed by a residual LayerNorm; output `last_hidden_state`. The
weights are random (seeded), so vectors mean nothing, but shapes, tokenization, truncation and
speed are those of the real architecture.

    from tests.support import modelgen
    tiny = modelgen.write_model_dir(tmp / "tiny", tokenizer_dir=GTE_TOKENIZER, **modelgen.TINY)
    gte = modelgen.write_model_dir(tmp / "gte-small", tokenizer_dir=GTE_TOKENIZER,
                                   **modelgen.GTE_SMALL)

A directory named `gte-small` with gte-small's architecture stands in for the real model by name:
`EMBED_MODEL_PATH=<its parent>` makes `Embedder.load("gte-small")` find it. `cached_model_dir(root,
name=..., ...)` builds a directory once per parameter set under `root` (a pytest cache directory,
say) and reuses it afterwards.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GENERATOR_VERSION = "1"  # bump when the graph changes: cached directories are rebuilt
OPSET = 17  # LayerNormalization is a standard op from 17 on
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


class Architecture(TypedDict):
    """The shape of a BERT encoder; pass it on with `**`."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    max_positions: int


# gte-small's architecture (../shared/models/gte-small/config.json).
GTE_SMALL: Architecture = {
    "layers": 12,
    "hidden": 384,
    "heads": 12,
    "intermediate": 1536,
    "max_positions": 512,
}
# Small enough to build and run in milliseconds, with gte-small's 512 positions.
TINY: Architecture = {
    "layers": 2,
    "hidden": 32,
    "heads": 2,
    "intermediate": 64,
    "max_positions": 512,
}


def write_model_dir(
    dest: Path,
    *,
    tokenizer_dir: Path,
    seed: int = 0,
    with_token_type_ids: bool = True,
    pooling: str | None = None,
    cross_encoder: bool = False,
    **architecture: Unpack[Architecture],
) -> Path:
    """Write model.onnx, config.json and `tokenizer_dir`'s tokenizer files into `dest`.

    The vocabulary size is the tokenizer's. `pooling` ("mean" or "cls") writes a
    1_Pooling/config.json; without it the directory says nothing and loaders default to mean.
    `cross_encoder`: a sequence classifier with one label (a reranker, as the ms-marco
    cross-encoders export): [CLS] pooled, tanh, one score per input, output `logits`.
    """
    vocab_size = _vocab_size(tokenizer_dir / "tokenizer.json")
    model = build_bert(
        vocab_size=vocab_size,
        seed=seed,
        with_token_type_ids=with_token_type_ids,
        cross_encoder=cross_encoder,
        **architecture,
    )
    dest.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(dest / "model.onnx"))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, dest / name)
    config = {
        "architectures": ["BertForSequenceClassification" if cross_encoder else "BertModel"],
        "model_type": "bert",
        "hidden_size": architecture["hidden"],
        "num_hidden_layers": architecture["layers"],
        "num_attention_heads": architecture["heads"],
        "intermediate_size": architecture["intermediate"],
        "max_position_embeddings": architecture["max_positions"],
        "vocab_size": vocab_size,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        **({"num_labels": 1} if cross_encoder else {}),
        "_generated_by": f"tests.support.modelgen v{GENERATOR_VERSION}, seed {seed}",
    }
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if pooling is not None:
        pooling_dir = dest / "1_Pooling"
        pooling_dir.mkdir(exist_ok=True)
        pooling_config = {
            "word_embedding_dimension": architecture["hidden"],
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
        }
        (pooling_dir / "config.json").write_text(json.dumps(pooling_config) + "\n")
    return dest


def cached_model_dir(root: Path, *, name: str, tokenizer_dir: Path, **params: Any) -> Path:
    """`write_model_dir` once per parameter set under `root`; later calls reuse the directory.

    The directory is called `name`, which is also the model's name when loaded: name a model
    "gte-small" only if it has gte-small's architecture (loading checks the registry's dimension).
    """
    key_source = json.dumps(
        {
            "v": GENERATOR_VERSION,
            "tokenizer": _file_digest(tokenizer_dir / "tokenizer.json"),
            **params,
        },
        sort_keys=True,
    )
    dest = root / hashlib.sha256(key_source.encode()).hexdigest()[:16] / name
    if (dest / "model.onnx").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the destination and rename: concurrent test processes never see half a model.
    work = Path(tempfile.mkdtemp(prefix=".build.", dir=dest.parent))
    try:
        write_model_dir(work / "model", tokenizer_dir=tokenizer_dir, **params)
        try:
            os.replace(work / "model", dest)
        except OSError:
            if not (dest / "model.onnx").is_file():  # another process won the race otherwise
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def build_bert(
    *,
    vocab_size: int,
    layers: int,
    hidden: int,
    heads: int,
    intermediate: int,
    max_positions: int,
    seed: int = 0,
    with_token_type_ids: bool = True,
    cross_encoder: bool = False,
) -> onnx.ModelProto:
    """The ONNX graph of a BERT encoder with random weights (normal, std 0.02, like BERT's init)."""
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    g = _GraphBuilder(np.random.default_rng(seed))
    head_dim = hidden // heads

    inputs = [_int64_input("input_ids"), _int64_input("attention_mask")]
    if with_token_type_ids:
        inputs.append(_int64_input("token_type_ids"))

    # Embeddings: word + position (0..seq-1) + token type, then LayerNorm.
    words = g.node("Gather", [g.weight("word_embeddings", vocab_size, hidden), "input_ids"])
    shape = g.node("Shape", ["input_ids"])
    seq_len = g.node("Gather", [shape, g.const("one", np.array(1, np.int64))], axis=0)
    positions = g.node(
        "Range",
        [g.const("zero", np.array(0, np.int64)), seq_len, g.const("step", np.array(1, np.int64))],
    )
    position_vectors = g.node(
        "Gather", [g.weight("position_embeddings", max_positions, hidden), positions]
    )
    type_table = g.weight("token_type_embeddings", 2, hidden)
    if with_token_type_ids:
        types = g.node("Gather", [type_table, "token_type_ids"])
    else:  # exports without the input add the type-0 row
        types = g.node("Gather", [type_table, g.const("type_zero", np.array(0, np.int64))])
    x = g.node("Add", [g.node("Add", [words, position_vectors]), types])
    x = g.layer_norm(x, hidden, "embeddings")

    # Additive attention mask: 0 where attended, a large negative number at padding.
    mask = g.node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    inverted = g.node("Sub", [g.const("one_f", np.array(1.0, np.float32)), mask])
    additive = g.node("Mul", [inverted, g.const("neg", np.array(-10000.0, np.float32))])
    additive = g.node("Unsqueeze", [additive, g.const("axes_12", np.array([1, 2], np.int64))])

    split_heads = g.const("split_heads", np.array([0, 0, heads, head_dim], np.int64))
    merge_heads = g.const("merge_heads", np.array([0, 0, hidden], np.int64))
    scale = g.const("scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    for i in range(layers):
        p = f"layer{i}"

        def project(name: str, src: str, d_in: int, d_out: int, prefix: str = p) -> str:
            y = g.node("MatMul", [src, g.weight(f"{prefix}.{name}.weight", d_in, d_out)])
            return g.node("Add", [y, g.zeros(f"{prefix}.{name}.bias", d_out)])

        def heads_of(t: str) -> str:
            return g.node("Reshape", [t, split_heads])

        q = g.node("Transpose", [heads_of(project("query", x, hidden, hidden))], perm=[0, 2, 1, 3])
        k = g.node("Transpose", [heads_of(project("key", x, hidden, hidden))], perm=[0, 2, 3, 1])
        v = g.node("Transpose", [heads_of(project("value", x, hidden, hidden))], perm=[0, 2, 1, 3])
        scores = g.node("Add", [g.node("Mul", [g.node("MatMul", [q, k]), scale]), additive])
        probs = g.node("Softmax", [scores], axis=-1)
        context = g.node("Transpose", [g.node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        context = g.node("Reshape", [context, merge_heads])
        attended = project("attention_output", context, hidden, hidden)
        x = g.layer_norm(g.node("Add", [attended, x]), hidden, f"{p}.attention")

        inner = g.gelu(project("intermediate", x, hidden, intermediate))
        out = project("output", inner, intermediate, hidden)
        x = g.layer_norm(g.node("Add", [out, x]), hidden, f"{p}.output")

    if cross_encoder:
        # BertForSequenceClassification: the [CLS] state through the pooler (dense, tanh), then
        # one label. The label's weights are scaled up so that random scores spread apart.
        cls = g.node("Gather", [x, g.const("zero", np.array(0, np.int64))], axis=1)
        pooled = g.node(
            "Tanh",
            [
                g.node(
                    "Add",
                    [
                        g.node("MatMul", [cls, g.weight("pooler.weight", hidden, hidden)]),
                        g.zeros("pooler.bias", hidden),
                    ],
                )
            ],
        )
        label = g.node(
            "Mul",
            [
                g.weight("classifier.weight", hidden, 1),
                g.const("spread", np.array(50.0, np.float32)),
            ],
        )
        logits = g.node("Add", [g.node("MatMul", [pooled, label]), g.zeros("classifier.bias", 1)])
        g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    else:
        g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
        output = helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden]
        )
    graph = helper.make_graph(g.nodes, "bert", inputs, [output], initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="tests.support.modelgen",
    )
    model.ir_version = 8  # readable by every onnxruntime this project supports
    onnx.checker.check_model(model)
    return model


class _GraphBuilder:
    """Names every node output and keeps the node and initializer lists."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: set[str] = set()

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        self._count += 1
        out = f"{op.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self._consts:
            self._consts.add(name)
            self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, *shape: int) -> str:
        values = self.rng.normal(0.0, 0.02, size=shape).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(values, name))
        return name

    def zeros(self, name: str, *shape: int) -> str:
        self.initializers.append(numpy_helper.from_array(np.zeros(shape, np.float32), name))
        return name

    def ones(self, name: str, *shape: int) -> str:
        self.initializers.append(numpy_helper.from_array(np.ones(shape, np.float32), name))
        return name

    def layer_norm(self, x: str, hidden: int, prefix: str) -> str:
        gamma = self.ones(f"{prefix}.LayerNorm.weight", hidden)
        beta = self.zeros(f"{prefix}.LayerNorm.bias", hidden)
        return self.node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-12)

    def gelu(self, x: str) -> str:
        """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as BERT exports spell it."""
        scaled = self.node("Div", [x, self.const("sqrt2", np.array(math.sqrt(2.0), np.float32))])
        erf = self.node("Erf", [scaled])
        one_plus = self.node("Add", [erf, self.const("one_f", np.array(1.0, np.float32))])
        half = self.const("half", np.array(0.5, np.float32))
        return self.node("Mul", [self.node("Mul", [x, one_plus]), half])


def _int64_input(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])


def _vocab_size(tokenizer_json: Path) -> int:
    from tokenizers import Tokenizer

    return int(Tokenizer.from_file(str(tokenizer_json)).get_vocab_size(with_added_tokens=True))


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
