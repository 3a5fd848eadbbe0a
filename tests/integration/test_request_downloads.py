"""A request never starts a model download (docs/security.md, HTTP): POST /embed and /readyz of
a default model that is not on this machine answered by starting its download in the
background, on the first request or the first one after a failed download. Now they answer 503
saying it is not downloaded (or downloading) and why, and the stand-in hub sees nothing; only
the worker's own work fetches a model (its start, its batches, its keeper retrying the
default model)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TINY_DIMS
from tests.support.fakehub import FakeHub, tiny_files, tiny_spec
from tests.support.in_flight import in_process_worker
from tests.support.process import wait_for
from worker import config, exceptions
from worker.config import Settings
from worker.http.server import serve
from worker.models import catalog
from worker.models.loaded import LoadedModels

REPO = "test-org/tiny"
WEIGHTS = "onnx/model.onnx"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_requests_never_start_a_model_download(
    settings: Settings,
    tiny_model_paths: str,
    hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    model_dir = next(
        Path(p) / "tiny-a"
        for p in tiny_model_paths.split(os.pathsep)
        if (Path(p) / "tiny-a").is_dir()
    )
    files = tiny_files(model_dir)
    hub.add(REPO, files)
    monkeypatch.setitem(catalog.REGISTRY, "tiny", tiny_spec(files, pin=(WEIGHTS,), int8=False))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    served = settings.with_overrides(
        model="tiny",  # EMBED_MODEL: the default, not on disk (a fresh cache)
        cache_dir=str(tmp_path / "cache"),
        offline=False,
        hf_endpoint=hub.endpoint,
        http_port=0,
    )
    embedders = LoadedModels(
        location=served.model_location,
        downloads=served.downloads,
        api_key=config.api_key_from_env,
        threads=1,
        retry_after=0.0,  # a failed load is tried again at once (a request started a download)
    )
    worker = in_process_worker(served, embedders)  # (not run: nothing of its own fetches)

    def asked() -> int:
        return len([p for _, p in hub.requests if p.endswith("model.onnx")])

    server = serve(worker, served)
    try:
        status, body = call(server.url + "/embed", {"input": "hello"})
        assert status == 503, body
        assert (
            "model tiny is not downloaded on this machine; requests never start a"
            in (body["error"])
        )
        assert "`embed-worker model download tiny`" in body["error"]
        assert hub.requests == []

        # The worker's own download fails (the hub answers 503 for the weights).
        hub.fail(REPO, WEIGHTS, 503)
        with pytest.raises(exceptions.ModelDownloading):
            embedders.get("tiny")
        wait_for(lambda: "tiny" in embedders.failures(), 30, what="the download failed")
        tried = asked()
        worker.started.set()  # (as start-up does once it tried the models: /readyz looks)
        for _ in range(3):
            status, body = call(server.url + "/embed", {"input": "hello"})
            assert status == 503 and "its last download failed" in body["error"], body
            status, body = call(server.url + "/readyz")
            assert status == 503, body
            assert any("model tiny is not downloaded" in p for p in body["problems"]), body
        assert asked() == tried

        # While the worker's own download runs: downloading, and still one download.
        hub.repos[REPO].failing.clear()
        hub.crawl(REPO, WEIGHTS, seconds=600)
        with pytest.raises(exceptions.ModelDownloading):
            embedders.get("tiny")
        wait_for(lambda: asked() > tried, 30, what="the worker's download started")
        status, body = call(server.url + "/embed", {"input": "hello"})
        assert status == 503 and body["error"].startswith("downloading test-org/tiny@"), body
        hub.release()
        wait_for(lambda: "tiny" in embedders.loaded(), 30, what="the model loaded")
        status, body = call(server.url + "/embed", {"input": "hello"})
        assert status == 200 and len(body["embedding"]) == TINY_DIMS, body
    finally:
        server.shutdown()
        hub.release()
