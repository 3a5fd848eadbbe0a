"""/readyz names the default model that is not loaded once: its problem was "model tiny: model
tiny is not downloaded on this machine; ...", the name before the reason and again in it, for
every reason that names its model (not downloaded, not present, unknown, failed to load)."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakehub import tiny_files, tiny_spec
from tests.support.in_flight import in_process_worker
from worker import config
from worker.config import Settings
from worker.http.server import serve
from worker.models import catalog
from worker.models.loaded import LoadedModels


def readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def model_problems(settings: Settings, model: str, tmp_path: Path) -> list[str]:
    """/readyz's problems of an in-process worker whose default model is `model`, from a fresh
    cache, downloads off (as start-up left it: it tried the models)."""
    served = settings.with_overrides(
        model=model, cache_dir=str(tmp_path / "cache"), offline=True, http_port=0
    )
    embedders = LoadedModels(
        location=served.model_location,
        downloads=served.downloads,
        api_key=config.api_key_from_env,
        threads=1,
    )
    worker = in_process_worker(served, embedders)  # (not run)
    worker.started.set()
    server = serve(worker, served)
    try:
        status, body = readyz(server.url)
    finally:
        server.shutdown()
    assert status == 503, body
    return [p for p in body["problems"] if model in p]


def named(model: str, problem: str) -> int:
    """How many times `problem` names `model` (as `tiny` or `'tiny'`)."""
    return len(re.findall(rf"(?<![\w/.-])'?{re.escape(model)}'?(?![\w/.-])", problem))


def test_readyz_names_a_registry_model_that_is_not_downloaded_once(
    settings: Settings, tmp_path: Path, tiny_model_paths: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = next(
        Path(p) / "tiny-a"
        for p in tiny_model_paths.split(os.pathsep)
        if (Path(p) / "tiny-a").is_dir()
    )
    monkeypatch.setitem(catalog.REGISTRY, "tiny", tiny_spec(tiny_files(model_dir), int8=False))
    (problem,) = model_problems(settings, "tiny", tmp_path)
    assert problem.startswith("model 'tiny' is not present and downloads are off"), problem
    assert named("tiny", problem.split(". ", 1)[0]) == 1, problem


def test_readyz_names_an_unknown_model_once(settings: Settings, tmp_path: Path) -> None:
    (problem,) = model_problems(settings, "no-such-model", tmp_path)
    assert problem.startswith("unknown model 'no-such-model'"), problem
    assert named("no-such-model", problem.split(". ", 1)[0]) == 1, problem


def test_readyz_names_a_model_its_reason_does_not_name(settings: Settings, tmp_path: Path) -> None:
    """A reason that names no model (a directory that is not a model's, named by its path) is
    said with the model's name before it, as before."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (problem,) = model_problems(settings, str(broken), tmp_path)
    assert problem.startswith(f"model {broken}: {broken} is not a model directory"), problem
