"""The hub stand-in for the quickstart: Supabase/gte-small at the registry's pinned revision,
served from the local stand-in files.

gte-small's real weights are not obtainable here, so its `onnx/model.onnx` is served with the
real all-MiniLM-L6-v2 weights (same BERT vocabulary, 384 dimensions): searches come out right.
The registry pins the sha256 of the real files, which the stand-ins are not, so a
`sitecustomize.py` (put first on PYTHONPATH of the processes under test) re-pins gte-small to the
stand-ins' checksums; the download path, verification included, runs unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.support.fakehub import FakeHub
from worker.models import catalog

SITECUSTOMIZE = '''\
"""Test only: re-pins the registry's gte-small to the hub stand-in's files."""
import dataclasses, json, os

from worker.models import catalog

_pins = json.loads(os.environ["EMBED_TEST_REGISTRY_PINS"])
_spec = catalog.REGISTRY["gte-small"]
catalog.REGISTRY["gte-small"] = dataclasses.replace(
    _spec,
    files=tuple(
        dataclasses.replace(f, sha256=_pins.get(f.path)) for f in _spec.files if f.path in _pins
    ),
    int8_file=None,
)
'''


def gte_small_files(shared: Path) -> dict[str, bytes]:
    """gte-small as the stand-in hub serves it: its real tokenizer and config, and
    all-MiniLM-L6-v2's weights (same vocabulary and width); skips the test when absent."""
    tokenizer_dir = shared / "gte-small"
    needed = [tokenizer_dir / "tokenizer.json", shared / "all-MiniLM-L6-v2" / "model.onnx"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"{', '.join(missing)} absent: `make test-models` builds them")
    files = {
        name: (tokenizer_dir / name).read_bytes()
        for name in (
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        )
    }
    files["onnx/model.onnx"] = (shared / "all-MiniLM-L6-v2" / "model.onnx").read_bytes()
    return files


def serve_gte_small(hub: FakeHub, shared: Path, pins_dir: Path) -> dict[str, str]:
    """Adds gte-small to `hub`; writes the sitecustomize into `pins_dir`; returns the
    environment the processes under test need (PYTHONPATH is left to the caller)."""
    spec = catalog.REGISTRY["gte-small"]
    files = gte_small_files(shared)
    hub.add(spec.repo_id, files, commit=spec.revision)
    pins_dir.mkdir(parents=True, exist_ok=True)
    (pins_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    pins = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    return {"HF_ENDPOINT": hub.endpoint, "EMBED_TEST_REGISTRY_PINS": json.dumps(pins)}
