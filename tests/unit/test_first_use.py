"""Registry models are fetched on first use (worker, demo, `embed`, `search`), once per cache,
checksum-verified, and never when downloads are off."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakehub import COMMIT, FakeHub, tiny_files, tiny_spec
from tests.support.process import wait_for
from worker import exceptions
from worker.cli import main as cli
from worker.config import Settings
from worker.models import catalog, download
from worker.models.loaded import MAX_REMEMBERED_FAILURES, LoadedModels


def models() -> LoadedModels:
    """The models as the worker would load them with this test's environment."""
    settings = Settings.from_env()
    return LoadedModels(
        location=settings.model_location, downloads=settings.downloads, api_key=settings.api_key
    )


def ensure(name: str) -> object:
    settings = Settings.from_env()
    return download.ensure(name, location=settings.model_location, policy=settings.downloads)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


@pytest.fixture
def tiny_repo(
    hub: FakeHub, tiny_model_dir: Path, embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, bytes]:
    """A registry model `tiny` served by the stand-in hub (HF_ENDPOINT), its weights pinned."""
    files = tiny_files(tiny_model_dir)
    hub.add("test-org/tiny", files)
    spec = tiny_spec(files, pin=("onnx/model.onnx",), int8=False)
    monkeypatch.setitem(catalog.REGISTRY, "tiny", spec)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.delenv("EMBED_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return files


def test_the_first_use_downloads_and_loads(
    hub: FakeHub, tiny_repo: dict[str, bytes], embed_env: Path
) -> None:
    embedder = models().get("tiny")

    assert embedder.embed(["hello"]).shape == (1, 32)
    assert (embed_env / "tiny" / "onnx" / "model.onnx").read_bytes() == tiny_repo["onnx/model.onnx"]
    assert sorted(
        p.rsplit("/", 1)[-1] for p in hub.downloads() if "/resolve/" in p or "__cdn" in p
    ) == [
        "config.json",
        "model.onnx",
        "tokenizer.json",
    ]


def test_concurrent_first_uses_download_once(hub: FakeHub, tiny_repo: dict[str, bytes]) -> None:
    errors: list[BaseException] = []

    def load() -> None:
        try:
            ensure("tiny")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    model_gets = [p for p in hub.downloads() if p.endswith("model.onnx")]
    assert len(model_gets) == 1


def test_a_corrupted_download_is_not_loaded(hub: FakeHub, tiny_repo: dict[str, bytes]) -> None:
    hub.corrupt("test-org/tiny", "onnx/model.onnx")

    with pytest.raises(exceptions.DownloadError, match="checksum mismatch"):
        models().get("tiny")


@pytest.mark.parametrize("switch", ["EMBED_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_says_exactly_what_to_fetch(
    hub: FakeHub, tiny_repo: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    monkeypatch.setenv(switch, "1")

    with pytest.raises(exceptions.ModelNotFound) as info:
        models().get("tiny")

    message = str(info.value)
    assert f"downloads are off ({switch}=1)" in message
    assert "embed-worker model download tiny" in message
    assert f"test-org/tiny at revision {COMMIT}" in message
    assert "config.json, tokenizer.json, onnx/model.onnx" in message
    assert hub.requests == []


def test_a_model_directory_without_model_onnx_says_so(
    tmp_path: Path, embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models" / "gte-small").mkdir(parents=True)
    (tmp_path / "models" / "gte-small" / "tokenizer.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBED_MODEL_PATH", "models")  # relative: resolved in the message

    with pytest.raises(exceptions.ModelNotFound) as info:
        ensure("gte-small")

    message = str(info.value)
    assert f"{tmp_path}/models/gte-small is not a model directory" in message
    assert "model.onnx (or onnx/model.onnx) missing" in message
    assert "tokenizer.json missing" not in message


def test_a_relative_model_path_is_shown_absolute(
    tmp_path: Path, embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBED_MODEL_PATH", "../nowhere")
    monkeypatch.setenv("EMBED_OFFLINE", "1")

    with pytest.raises(exceptions.ModelNotFound) as info:
        Settings.from_env().model_location.locate("some-local-model")

    assert f"looked in {tmp_path.parent / 'nowhere'}" in str(info.value)


def test_load_failures_are_remembered_in_bounded_memory(
    embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBED_OFFLINE", "1")
    embedders = models()
    for i in range(100):
        with pytest.raises(exceptions.ModelNotFound):
            embedders.get(f"no-such-model-{i}")

    remembered = embedders.failures()
    assert len(remembered) == MAX_REMEMBERED_FAILURES
    assert "no-such-model-99" in remembered and "no-such-model-0" not in remembered


@pytest.mark.parametrize("switch", ["EMBED_OFFLINE", "HF_HUB_OFFLINE"])
def test_model_download_refuses_while_downloads_are_off(
    switch: str,
    hub: FakeHub,
    tiny_repo: dict[str, bytes],
    embed_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """EMBED_OFFLINE=1 means never download a model (docs/configuration.md), HF_HUB_OFFLINE=1
    the same: `model download` says so (exit 2) and fetches nothing; its advice is not the
    command that was just refused."""
    monkeypatch.setenv(switch, "1")

    assert cli.main(["model", "download", "tiny"]) == 2

    assert [p for p in hub.downloads() if "/resolve/" in p or "__cdn" in p] == []
    assert not (embed_env / "tiny").exists()
    said = capsys.readouterr().err
    assert f"downloads are off ({switch}=1)" in said
    assert f"on a machine that reaches the hub, with {switch} unset" in said
    assert "model download tiny" not in said


def test_a_worker_serves_on_while_a_model_downloads(
    hub: FakeHub, tiny_repo: dict[str, bytes]
) -> None:
    """A worker's get() of a model that downloads says so at once (its targets are held with
    that reason) instead of waiting for the download; the model is loaded once it is in."""
    hub.crawl("test-org/tiny", "onnx/model.onnx", seconds=600)
    embedders = models()
    embedders.serve_while_downloading(threading.Event(), wait=False)

    with pytest.raises(exceptions.ModelDownloading, match="downloading test-org/tiny"):
        embedders.get("tiny")
    assert "model tiny: downloading test-org/tiny" in embedders.downloading()["tiny"]
    with pytest.raises(exceptions.ModelDownloading):
        embedders.get("tiny")  # (one download)

    hub.release()
    wait_for(lambda: "tiny" in embedders.loaded(), 30, what="the model loaded")
    assert embedders.downloading() == {}
    assert len([p for p in hub.downloads() if p.endswith("model.onnx")]) == 1


def test_a_stop_ends_a_wait_for_a_download(hub: FakeHub, tiny_repo: dict[str, bytes]) -> None:
    """A one-shot run waits for its model's download; its stop does not."""
    hub.crawl("test-org/tiny", "onnx/model.onnx", seconds=600)
    stop = threading.Event()
    embedders = models()
    embedders.serve_while_downloading(stop, wait=True)
    timer = threading.Timer(0.5, stop.set)
    timer.start()

    started = time.monotonic()
    with pytest.raises(exceptions.ModelError, match="stopped while downloading"):
        embedders.get("tiny")

    assert time.monotonic() - started < 5
    timer.join()
