"""What a download leaves in the cache, and what repairs it: staging directories of a killed
download swept, directories readable by other users, damaged files fetched again, a cache that
cannot be written named as the setting it is, a wait for another download that a stop ends, and
messages that say what happened (an unreachable hub, one that answered an error, downloads off
as the operator wrote it)."""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakehub import FakeHub, tiny_files, tiny_spec
from tests.support.process import wait_for
from worker import exceptions
from worker.cli import main as cli
from worker.config import Settings
from worker.models import catalog, download, hub
from worker.models.loaded import LoadedModels

MODEL_FILE = "onnx/model.onnx"


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


@pytest.fixture
def tiny_repo(
    fake_hub: FakeHub, tiny_model_dir: Path, embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, bytes]:
    """A registry model `tiny` served by the stand-in hub (HF_ENDPOINT), its weights pinned."""
    files = tiny_files(tiny_model_dir)
    fake_hub.add("test-org/tiny", files)
    monkeypatch.setitem(catalog.REGISTRY, "tiny", tiny_spec(files, pin=(MODEL_FILE,), int8=False))
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    monkeypatch.delenv("EMBED_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return files


def fetch(**options: object) -> Path:
    settings = Settings.from_env()
    return download.download(
        "tiny",
        location=settings.model_location,
        endpoint=settings.downloads.endpoint,
        **options,  # type: ignore[arg-type]
    )


def models() -> LoadedModels:
    settings = Settings.from_env()
    return LoadedModels(
        location=settings.model_location, downloads=settings.downloads, api_key=settings.api_key
    )


def weights_fetched(fake_hub: FakeHub) -> int:
    return len([p for p in fake_hub.downloads() if p.endswith(MODEL_FILE)])


# --- staging directories, modes ------------------------------------------------------------------


def test_a_killed_download_s_staging_directories_are_swept_by_the_next(
    tiny_repo: dict[str, bytes], embed_env: Path
) -> None:
    """A download killed (kill -9) never ran its `finally`: its staging directory stayed in the
    cache for good. The next download of that model, holding its lock, removes them; another
    model's are left alone."""
    embed_env.mkdir(parents=True)
    stale = [embed_env / ".tiny.ab12cd34", embed_env / ".tiny.staging-x9y8z7w6"]
    for directory in stale:
        (directory / "onnx").mkdir(parents=True)
        (directory / "onnx" / "model.onnx.incomplete").write_bytes(b"partial")
    other = embed_env / ".tiny-other.ab12cd34"
    other.mkdir()

    fetch()

    assert [p for p in stale if p.exists()] == []
    assert other.is_dir()


def test_a_downloaded_model_is_readable_by_other_users(
    tiny_repo: dict[str, bytes], embed_env: Path
) -> None:
    """The staging directory (mkdtemp: 0700) became the model directory: the service user could
    not read a model that root downloaded. It gets the umask's mode."""
    old = os.umask(0o022)
    try:
        path = fetch()
    finally:
        os.umask(old)

    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert stat.S_IMODE((path / MODEL_FILE).stat().st_mode) & 0o044 == 0o044


# --- damaged files -------------------------------------------------------------------------------


def test_model_download_repairs_a_damaged_file(
    fake_hub: FakeHub,
    tiny_repo: dict[str, bytes],
    embed_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A truncated model.onnx: `model download` said "already in" (exit 0), `model list`
    "present", and loading failed with no word of what repairs it. Now the list says damaged,
    loading names the command, and the command fetches the file again."""
    path = fetch()
    weights = path / MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:1000])

    assert cli.main(["model", "list"]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if "tiny" in line)
    assert "damaged (onnx/model.onnx)" in listed
    with pytest.raises(exceptions.ModelError, match="`embed-worker model download tiny`"):
        models().get("tiny")

    assert cli.main(["model", "download", "tiny"]) == 0

    assert weights.read_bytes() == tiny_repo[MODEL_FILE]
    assert weights_fetched(fake_hub) == 2
    assert "onnx/model.onnx" in capsys.readouterr().err  # (said it fetched it again)
    assert models().get("tiny").embed(["hello"]).shape == (1, 32)


def test_a_file_changed_in_place_is_found_by_its_checksum(
    fake_hub: FakeHub, tiny_repo: dict[str, bytes]
) -> None:
    path = fetch()
    weights = path / MODEL_FILE
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF  # the same size
    weights.write_bytes(bytes(data))

    fetch()

    assert weights.read_bytes() == tiny_repo[MODEL_FILE]
    assert weights_fetched(fake_hub) == 2


# --- the cache -----------------------------------------------------------------------------------


def test_a_cache_that_cannot_be_written_is_named_as_the_setting(
    tiny_repo: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    """`model download --cache-dir /proc/x` ended on a traceback (OSError on .locks), exit 1."""
    assert cli.main(["model", "download", "tiny", "--cache-dir", "/proc/x"]) == 2

    said = capsys.readouterr().err
    assert "cannot write the model cache /proc/x" in said
    assert "EMBED_CACHE_DIR (or --cache-dir)" in said
    assert "Traceback" not in said


def test_a_worker_s_cache_that_cannot_be_written_is_the_reason_its_model_waits(
    tiny_repo: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBED_CACHE_DIR", "/proc/x")

    with pytest.raises(exceptions.ModelError) as info:
        models().get("tiny")

    assert "cannot write the model cache /proc/x" in str(info.value)
    assert "EMBED_CACHE_DIR" in str(info.value)


# --- waiting for another process's download ------------------------------------------------------


def test_a_stop_ends_the_wait_for_another_process_s_download(
    tiny_repo: dict[str, bytes], embed_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The wait was flock(LOCK_EX), unbounded: a worker stopped while another process downloaded
    the model exited only when that download ended."""
    locks = embed_env / ".locks"
    locks.mkdir(parents=True)
    stop = threading.Event()
    outcome: list[BaseException] = []

    def wait_for_it() -> None:
        try:
            fetch(stop=stop)
        except BaseException as exc:
            outcome.append(exc)

    with (locks / "tiny.lock").open("a") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)  # (another open file: another holder)
        caplog.set_level(logging.INFO, "worker.models.download")
        waiter = threading.Thread(target=wait_for_it, daemon=True)
        waiter.start()
        wait_for(lambda: "another process is downloading tiny" in caplog.text, 10)
        stopped_at = time.monotonic()
        stop.set()
        waiter.join(5)
        assert not waiter.is_alive()
        assert time.monotonic() - stopped_at < 2

    assert len(outcome) == 1 and isinstance(outcome[0], hub.Stopped)
    assert not (embed_env / "tiny").exists()


# --- messages ------------------------------------------------------------------------------------


def test_a_hub_that_answers_an_error_is_not_called_unreachable(
    fake_hub: FakeHub, tiny_repo: dict[str, bytes]
) -> None:
    fake_hub.fail("test-org/tiny", MODEL_FILE, 500)

    with pytest.raises(exceptions.DownloadError) as info:
        fetch()

    message = str(info.value)
    assert f"the hub at {fake_hub.endpoint} answered HTTP 500 for onnx/model.onnx" in message
    assert "try again later" in message
    assert "without access to the hub" not in message


def test_a_hub_that_cannot_be_reached_says_how_to_fetch_the_model_elsewhere(
    tiny_repo: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # (the discard port: refused)

    with pytest.raises(exceptions.DownloadError) as info:
        fetch()

    assert "On a machine without access to the hub" in str(info.value)


def test_model_download_of_an_unknown_name_says_so_when_downloads_are_off(
    embed_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMBED_OFFLINE", "1")

    assert cli.main(["model", "download", "nope"]) == 2

    said = capsys.readouterr().err
    assert "unknown model 'nope'" in said
    assert "downloads are off" not in said


def test_downloads_off_are_said_as_the_operator_wrote_them(
    tiny_repo: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMBED_OFFLINE", "yes")

    assert cli.main(["model", "download", "tiny"]) == 2
    assert "downloads are off (EMBED_OFFLINE=yes)" in capsys.readouterr().err
    with pytest.raises(exceptions.ModelNotFound, match=r"downloads are off \(EMBED_OFFLINE=yes\)"):
        models().get("tiny")
