"""The models the worker knows by name: hub repository, pinned revision, checksums, dimension.

`REGISTRY` is what `embed-worker model list|download` and first-use downloads
(`worker/models/download.py`) read; `worker/models/files.py` finds model directories on disk,
with these entries filling gaps in a directory's own config files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Pooling = Literal["mean", "cls"]
Variant = Literal["fp32", "int8"]
FileVariant = Literal["any", "fp32", "int8"]

DEFAULT_MODEL = "gte-small"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model repository on the hub.

    `sha256` is pinned where a real value could be found in public sources; `None` means the
    download is verified against what the hub itself reports for the pinned revision (the sha256
    of an LFS file, the git blob sha1 of a small file).
    """

    path: str
    sha256: str | None = None
    variant: FileVariant = "any"
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A model the worker knows by name."""

    name: str
    repo_id: str
    revision: str  # a commit hash, never a branch
    dim: int
    pooling: Pooling
    max_tokens: int
    files: tuple[RemoteFile, ...]
    int8_file: str | None  # repo path of a shipped int8 file; None: quantized locally on first use
    description: str

    def files_for(self, variant: Variant | Literal["all"]) -> list[RemoteFile]:
        """The files `download(variant=...)` fetches; int8 without a shipped file needs fp32."""
        if variant == "all":
            return list(self.files)
        wanted: set[FileVariant] = {"any", variant}
        if variant == "int8" and self.int8_file is None:
            wanted.add("fp32")
        return [f for f in self.files if f.variant in wanted]


# Revisions and checksums. Every revision below is a real commit of its repository, and every
# sha256 written out is a value published for that file by independent public sources (model
# pin lists in other projects' code, cross-checked against each other and, where we have the
# file, against our local copy in ../shared/models). Files with `sha256=None` have no published
# value we could find: download() verifies them against the hub's own report instead.
#
# Supabase/gte-small @ 93b36ff0: the revision Supabase-based projects pin for transformers.js.
#   tokenizer.json, tokenizer_config.json, special_tokens_map.json and onnx/model_quantized.onnx
#   are pinned (the quantized file is byte-identical to Xenova/gte-small's); config.json and the
#   fp32 onnx/model.onnx are hub-reported.
# sentence-transformers/all-MiniLM-L6-v2 @ c9745ed1: the revision that added onnx/; onnx/model.onnx,
#   tokenizer.json, config.json, tokenizer_config.json, special_tokens_map.json and
#   1_Pooling/config.json are pinned (the last five equal ../shared/models' copies byte for byte);
#   sentence_bert_config.json is hub-reported. The repo ships only CPU-specific int8 exports, so
#   int8 is quantized locally.
# BAAI/bge-small-en-v1.5 @ 5c38ec7c: onnx/model.onnx, tokenizer.json, config.json,
#   tokenizer_config.json and special_tokens_map.json are pinned; 1_Pooling/config.json and
#   sentence_bert_config.json are hub-reported. No int8 file: quantized locally.
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="gte-small",
            repo_id="Supabase/gte-small",
            revision="93b36ff09519291b77d6000d2e86bd8565378086",
            dim=384,
            pooling="mean",
            max_tokens=512,
            files=(
                RemoteFile("config.json"),
                RemoteFile(
                    "tokenizer.json",
                    "da0e79933b9ed51798a3ae27893d3c5fa4a201126cef75586296df9b4d2c62a0",
                ),
                RemoteFile(
                    "tokenizer_config.json",
                    "73687f47b47aedc8bfa8712f7e6616450058f1f1bb3d5e5861f8a92964d6467a",
                ),
                RemoteFile(
                    "special_tokens_map.json",
                    "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
                ),
                RemoteFile("onnx/model.onnx", variant="fp32"),
                RemoteFile(
                    "onnx/model_quantized.onnx",
                    "18dec105109b6004369799ca4761fb8fb413c64172c02147bcfac186b5c5f6cb",
                    variant="int8",
                ),
            ),
            int8_file="onnx/model_quantized.onnx",
            description="General Text Embeddings small; what Supabase's automatic embeddings use",
        ),
        ModelSpec(
            name="all-MiniLM-L6-v2",
            repo_id="sentence-transformers/all-MiniLM-L6-v2",
            revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
            dim=384,
            pooling="mean",
            max_tokens=256,
            files=(
                RemoteFile(
                    "config.json",
                    "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                ),
                RemoteFile(
                    "tokenizer.json",
                    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                ),
                RemoteFile(
                    "tokenizer_config.json",
                    "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                ),
                RemoteFile(
                    "special_tokens_map.json",
                    "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                ),
                RemoteFile("sentence_bert_config.json"),
                RemoteFile(
                    "1_Pooling/config.json",
                    "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                ),
                RemoteFile(
                    "onnx/model.onnx",
                    "6fd5d72fe4589f189f8ebc006442dbb529bb7ce38f8082112682524616046452",
                    variant="fp32",
                ),
            ),
            int8_file=None,
            description="sentence-transformers MiniLM, 6 layers",
        ),
        ModelSpec(
            name="bge-small-en-v1.5",
            repo_id="BAAI/bge-small-en-v1.5",
            revision="5c38ec7c405ec4b44b94cc5a9bb96e735b38267a",
            dim=384,
            pooling="cls",
            max_tokens=512,
            files=(
                RemoteFile(
                    "config.json",
                    "094f8e891b932f2000c92cfc663bac4c62069f5d8af5b5278c4306aef3084750",
                ),
                RemoteFile(
                    "tokenizer.json",
                    "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
                ),
                RemoteFile(
                    "tokenizer_config.json",
                    "9261e7d79b44c8195c1cada2b453e55b00aeb81e907a6664974b4d7776172ab3",
                ),
                RemoteFile(
                    "special_tokens_map.json",
                    "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
                ),
                RemoteFile("sentence_bert_config.json", optional=True),
                RemoteFile("1_Pooling/config.json", optional=True),
                RemoteFile(
                    "onnx/model.onnx",
                    "828e1496d7fabb79cfa4dcd84fa38625c0d3d21da474a00f08db0f559940cf35",
                    variant="fp32",
                ),
            ),
            int8_file=None,
            description="BAAI general embedding, small, English (CLS pooling)",
        ),
    )
}


def known_models() -> list[ModelSpec]:
    """The registry, default model first."""
    return sorted(REGISTRY.values(), key=lambda s: (s.name != DEFAULT_MODEL, s.name))
