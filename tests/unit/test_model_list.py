"""`embed-worker model list` about model directories: each directory meant as a model's is
listed, a usable one with the dimensions its ONNX file declares (worker/models/onnx_outputs.py,
read without loading it), one that is not usable with why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from worker.config import Settings
from worker.models import files, onnx_outputs

pytestmark = pytest.mark.usefixtures("embed_env")


def listed(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, files.ModelRow]:
    monkeypatch.setenv("EMBED_MODEL_PATH", str(path))
    return {row.name: row for row in files.list_models(Settings.from_env().model_location)}


def test_a_directory_without_its_tokenizer_is_listed_as_not_usable_with_why(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(tiny_model_dir, tmp_path / "half-copied")
    (tmp_path / "half-copied" / "tokenizer.json").unlink()
    (tmp_path / "notes").mkdir()  # a folder holding no model file is no model's

    rows = listed(tmp_path, monkeypatch)

    row = rows["half-copied"]
    assert not row.present and row.problem == "tokenizer.json missing"
    assert row.location == tmp_path / "half-copied"
    assert "notes" not in rows


def test_an_unreadable_config_is_listed_as_not_usable_with_why(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (tmp_path / "broken" / "config.json").write_text("{not json")

    row = listed(tmp_path, monkeypatch)["broken"]

    assert not row.present
    assert row.problem is not None and row.problem.startswith("config.json: cannot read it as JSON")


def test_a_directorys_dimensions_are_its_onnx_files_not_its_configs(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.json says 768 (a wrong copy, or a model with a projection): the model produces
    what its graph declares, 32 here, as Embedder.load finds."""
    path = tmp_path / "mine"
    shutil.copytree(tiny_model_dir, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "hidden_size": 768}))

    row = listed(tmp_path, monkeypatch)["mine"]

    assert (row.dim, row.dim_from, row.present) == (32, None, True)


def test_a_cross_encoders_directory_is_listed_as_a_reranker(
    tmp_path: Path, tiny_cross_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(tiny_cross_encoder_dir, tmp_path / "my-rerank")

    row = listed(tmp_path, monkeypatch)["my-rerank"]

    assert (row.reranker, row.pooling, row.present) == (True, "-", True)


def test_a_built_in_models_directory_of_other_dimensions_or_missing_a_file_is_not_present(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory named like a built-in model that holds another (Embedder.load refuses it),
    and one that lacks its ONNX file: the name is not present, and the row says why."""
    shutil.copytree(tiny_model_dir, tmp_path / "bge-small-en-v1.5")
    shutil.copytree(tiny_model_dir, tmp_path / "gte-small")
    (tmp_path / "gte-small" / "model.onnx").unlink()

    rows = listed(tmp_path, monkeypatch)

    assert not rows["bge-small-en-v1.5"].present
    assert rows["bge-small-en-v1.5"].problem == "its ONNX file produces 32 dimensions, not 384"
    assert not rows["gte-small"].present
    assert rows["gte-small"].problem == "model.onnx (or onnx/model.onnx) missing"
    assert rows["gte-small"].location == tmp_path / "gte-small"


def test_the_outputs_are_read_without_loading_the_model(tiny_model_dir: Path) -> None:
    shapes = onnx_outputs.outputs(tiny_model_dir / "model.onnx")

    assert shapes == {"last_hidden_state": (None, None, 32)}
    assert onnx_outputs.hidden_dim(shapes) == 32
    assert onnx_outputs.outputs(tiny_model_dir / "tokenizer.json") is None
