"""int8 dynamic quantization of an fp32 ONNX model, done once and kept in the cache.

Used when `variant="int8"` is asked of a model that ships no quantized file. The result goes to
`<cache>/int8/<key>/model_quantized.onnx`, never into the model directory (which may be
read-only). The key is the sha256 of the source model plus the quantizer settings version, so a
changed source model or changed settings are quantized afresh.

Settings, chosen by measurement on all-MiniLM-L6-v2 over 300 standard-library docstrings on the
2-core AVX-512 (no VNNI) benchmark machine: signed int8 weights, per-channel scales, MatMul nodes
only. Per-tensor scales lost too much (mean cosine to fp32 0.959, minimum 0.909); per-channel gave
0.993 / 0.986 at the same speed (about 1.8x fp32). Quantizing the embedding Gather as well saved
memory but cost fidelity (minimum 0.982), and reduce_range did not help on this CPU.

Needs the `onnx` package (the `int8` extra): onnxruntime's quantizer is written against it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from worker import exceptions

logger = logging.getLogger(__name__)

QUANTIZER_VERSION = "1"  # bump when the settings in `quantize` change: cached files are re-made
QUANTIZED_NAME = "model_quantized.onnx"


def cached_int8(source: Path, *, cache_dir: Path) -> Path:
    """The int8 model for `source`, quantizing it into `cache_dir` on first use."""
    target = cache_dir / "int8" / cache_key(source) / QUANTIZED_NAME
    if target.is_file():
        logger.debug("int8 model for %s found in %s", source, target)
        return target
    logger.info("quantizing %s to int8 (first use; kept in %s)", source, target.parent)
    quantize(source, target)
    return target


def cache_key(source: Path) -> str:
    """sha256 of the source model's bytes and the quantizer version."""
    digest = hashlib.sha256(f"embed-worker int8 v{QUANTIZER_VERSION}\0".encode())
    with source.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def quantize(source: Path, target: Path) -> None:
    """Write the dynamically quantized `source` to `target` atomically."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise exceptions.ModelError(
            f"{source.parent} has no {QUANTIZED_NAME}, and quantizing it to int8 needs the onnx "
            "package: pip install 'embed-worker[int8]' (or use variant fp32)"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".quantize.", dir=target.parent))
    try:
        prepared = work / "prepared.onnx"
        # The quantizer expects shape-inferred, lightly optimized graphs (and warns otherwise).
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantized = work / QUANTIZED_NAME
        quantize_dynamic(
            str(prepared),
            str(quantized),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
        )
        os.replace(quantized, target)  # concurrent quantizers produce the same file; last wins
    except Exception as exc:  # the quantizer raises anything from onnx's checker to KeyError
        raise exceptions.ModelError(f"int8 quantization of {source} failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
