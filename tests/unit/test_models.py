"""The model registry, name resolution, model directories, `model list` and `model download`."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakehub import COMMIT, FakeHub, tiny_files, tiny_spec
from worker import exceptions
from worker.config import Settings
from worker.models import catalog, download, files
from worker.models.embedder import Embedder
from worker.models.hub import GIT_SHA1, SHA256

pytestmark = pytest.mark.usefixtures("embed_env")


def here() -> files.ModelLocation:
    """Where models are found, as the Settings read it from this test's environment."""
    return Settings.from_env().model_location


# --- registry ------------------------------------------------------------------------------------


def test_registry_lists_the_default_model_first() -> None:
    names = [spec.name for spec in catalog.known_models()]

    assert names[0] == catalog.DEFAULT_MODEL == "gte-small"
    assert set(names) == {"gte-small", "all-MiniLM-L6-v2", "bge-small-en-v1.5"}


@pytest.mark.parametrize(
    ("name", "repo_id", "pooling", "max_tokens"),
    [
        ("gte-small", "Supabase/gte-small", "mean", 512),
        ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "mean", 256),
        ("bge-small-en-v1.5", "BAAI/bge-small-en-v1.5", "cls", 512),
    ],
)
def test_registry_entries(name: str, repo_id: str, pooling: str, max_tokens: int) -> None:
    spec = catalog.REGISTRY[name]

    assert (spec.repo_id, spec.dim, spec.pooling, spec.max_tokens) == (
        repo_id,
        384,
        pooling,
        max_tokens,
    )
    assert GIT_SHA1.match(spec.revision), "revisions are commits, never branches"
    assert all(f.sha256 is None or SHA256.match(f.sha256) for f in spec.files)
    paths = {f.path for f in spec.files}
    assert {"tokenizer.json", "onnx/model.onnx"} <= paths


def test_gte_small_ships_its_int8_file() -> None:
    spec = catalog.REGISTRY["gte-small"]

    assert spec.int8_file == "onnx/model_quantized.onnx"
    assert [f.path for f in spec.files_for("int8") if f.path.endswith(".onnx")] == [
        "onnx/model_quantized.onnx"
    ]
    assert [f.path for f in spec.files_for("fp32") if f.path.endswith(".onnx")] == [
        "onnx/model.onnx"
    ]


def test_int8_of_a_model_without_int8_file_downloads_fp32() -> None:
    onnx_files = [
        f.path for f in catalog.REGISTRY["all-MiniLM-L6-v2"].files_for("int8") if ".onnx" in f.path
    ]

    assert onnx_files == ["onnx/model.onnx"]


@pytest.mark.parametrize(
    ("name", "files"),
    [
        ("gte-small", ["tokenizer.json", "special_tokens_map.json"]),
        (
            "all-MiniLM-L6-v2",
            [
                "tokenizer.json",
                "config.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "1_Pooling/config.json",
            ],
        ),
    ],
)
def test_pinned_checksums_match_the_shared_copies(name: str, files: list[str]) -> None:
    """The pins are real: the hub's files that we also have locally hash to them."""
    from tests.support.models import shared_models_dir

    local = shared_models_dir() / name
    if not local.is_dir():
        pytest.skip(f"{local} is absent")
    pins = {f.path: f.sha256 for f in catalog.REGISTRY[name].files}
    for path in files:
        assert hashlib.sha256((local / path).read_bytes()).hexdigest() == pins[path], path


# --- resolution ----------------------------------------------------------------------------------


def _model_dir(base: Path, name: str, *, hf_layout: bool = False) -> Path:
    path = base / name
    onnx_file = path / ("onnx/model.onnx" if hf_layout else "model.onnx")
    onnx_file.parent.mkdir(parents=True)
    onnx_file.write_bytes(b"not really onnx")
    (path / "tokenizer.json").write_text("{}")
    return path


def test_model_path_comes_before_the_cache(
    tmp_path: Path, embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _model_dir(embed_env, "gte-small")
    first, second = tmp_path / "a", tmp_path / "b"
    in_second = _model_dir(second, "gte-small", hf_layout=True)
    first.mkdir()
    monkeypatch.setenv("EMBED_MODEL_PATH", f"{first}:{second}")

    assert here().locate("gte-small") == in_second


def test_cache_is_searched_last(embed_env: Path) -> None:
    cached = _model_dir(embed_env, "gte-small")

    assert here().locate("gte-small") == cached


def test_a_path_is_used_as_is(tmp_path: Path) -> None:
    path = _model_dir(tmp_path, "anything")

    assert here().locate(str(path)) == path


def test_a_bare_name_in_the_working_directory_does_not_shadow_the_search_path(
    tmp_path: Path, embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = _model_dir(embed_env, "gte-small")
    (tmp_path / "gte-small").mkdir()  # an unrelated directory of the same name
    local = _model_dir(tmp_path, "my-model")
    monkeypatch.chdir(tmp_path)

    assert here().locate("gte-small") == cached
    assert here().locate("my-model").resolve() == local


def test_missing_registry_model_names_the_command_and_the_variable(embed_env: Path) -> None:
    with pytest.raises(exceptions.ModelNotFound) as info:
        here().locate("gte-small")

    message = str(info.value)
    assert "embed-worker model download gte-small" in message
    assert "EMBED_MODEL_PATH" in message
    assert str(embed_env) in message


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(exceptions.ModelNotFound, match=r"unknown model 'nope'.*gte-small"):
        here().locate("nope")


def test_a_directory_without_model_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(exceptions.ModelNotFound, match="is not a model directory"):
        here().locate(str(tmp_path / "empty"))
    with pytest.raises(exceptions.ModelNotFound, match="does not exist"):
        here().locate(str(tmp_path / "absent"))


def test_loading_a_missing_model_opens_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a model must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)

    with pytest.raises(exceptions.ModelNotFound, match="embed-worker model download gte-small"):
        Embedder.load("gte-small", location=here())


# --- model directories ---------------------------------------------------------------------------


def test_max_tokens_prefers_sentence_bert_config(minilm_dir: Path) -> None:
    info = files.ModelDir.read(minilm_dir)

    assert info.max_tokens == 256  # sentence_bert_config.json, not max_position_embeddings 512
    assert info.pooling == "mean"
    assert info.hidden_size == 384
    assert info.int8_file is None


def test_max_tokens_falls_back_to_max_position_embeddings(tiny_model_dir: Path) -> None:
    info = files.ModelDir.read(tiny_model_dir)

    assert info.max_tokens == 512


def test_hf_layout_and_quantized_file_are_found(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "hf"
    (path / "onnx").mkdir(parents=True)
    shutil.copy(tiny_model_dir / "model.onnx", path / "onnx" / "model.onnx")
    shutil.copy(tiny_model_dir / "model.onnx", path / "onnx" / "model_quantized.onnx")
    shutil.copy(tiny_model_dir / "tokenizer.json", path / "tokenizer.json")
    pooling = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))

    info = files.ModelDir.read(path)

    assert info.fp32_file == path / "onnx" / "model.onnx"
    assert info.int8_file == path / "onnx" / "model_quantized.onnx"
    assert info.pooling == "cls"


def test_registry_settings_fill_gaps_of_a_directory_named_like_the_model(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    path = tmp_path / "bge-small-en-v1.5"
    shutil.copytree(tiny_model_dir, path)

    assert files.ModelDir.read(path).pooling == "cls"


# --- model list ----------------------------------------------------------------------------------


def test_list_shows_known_models_and_local_directories(
    tmp_path: Path, embed_env: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "my-model")
    _model_dir(embed_env, "all-MiniLM-L6-v2")
    monkeypatch.setenv("EMBED_MODEL_PATH", str(tmp_path / "models"))

    rows = {row.name: row for row in files.list_models(here())}

    assert list(rows)[:3] == ["gte-small", "all-MiniLM-L6-v2", "bge-small-en-v1.5"]
    assert not rows["gte-small"].present and rows["gte-small"].location is None
    assert rows["all-MiniLM-L6-v2"].present
    assert rows["all-MiniLM-L6-v2"].location == embed_env / "all-MiniLM-L6-v2"
    assert rows["gte-small"].source.startswith("Supabase/gte-small@93b36ff09519")
    local = rows["my-model"]
    assert (local.dim, local.pooling, local.max_tokens, local.source) == (32, "mean", 512, "local")


# --- download ------------------------------------------------------------------------------------


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


def _entries(directory: Path) -> list[str]:
    """Names in `directory`, hidden ones (staging) included, except the download locks; none when
    it does not exist."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name != ".locks")


@pytest.fixture
def repo_files(tiny_model_dir: Path) -> dict[str, bytes]:
    return {
        **tiny_files(tiny_model_dir),
        "onnx/model_quantized.onnx": (tiny_model_dir / "model.onnx").read_bytes(),
        "README.md": b"not downloaded",
    }


def _register(
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, bytes],
    *,
    pin: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    int8: bool = True,
) -> catalog.ModelSpec:
    """Registers `tiny` (tests/support/fakehub.py: tiny_spec) for the test."""
    spec = tiny_spec(files, pin=pin, optional=optional, int8=int8)
    monkeypatch.setitem(catalog.REGISTRY, "tiny", spec)
    return spec


def test_download_fetches_the_pinned_revision_and_loads(
    hub: FakeHub, repo_files: dict[str, bytes], embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("test-org/tiny", repo_files)
    _register(monkeypatch, repo_files, pin=("tokenizer.json", "onnx/model.onnx"))

    path = download.download("tiny", location=here(), endpoint=hub.endpoint)

    assert path == embed_env / "tiny"
    for name in ("config.json", "tokenizer.json", "onnx/model.onnx"):
        assert (path / name).read_bytes() == repo_files[name]
    assert not (path / "onnx" / "model_quantized.onnx").exists()  # fp32 only
    assert not (path / ".cache").exists()
    manifest = json.loads((path / download.MANIFEST).read_text())
    assert manifest["revision"] == COMMIT
    assert manifest["files"]["config.json"] == hashlib.sha256(repo_files["config.json"]).hexdigest()
    resolved = [p for _, p in hub.requests if "/resolve/" in p]
    assert resolved and all(f"/resolve/{COMMIT}/" in p for p in resolved)
    assert _entries(embed_env) == ["tiny"]  # no staging directory left behind
    assert Embedder.load("tiny", location=here()).embed(["hello"]).shape == (1, 32)


def test_download_again_fetches_nothing(
    hub: FakeHub, repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("test-org/tiny", repo_files)
    _register(monkeypatch, repo_files)
    download.download("tiny", location=here(), endpoint=hub.endpoint)
    before = len(hub.requests)

    download.download("tiny", location=here(), endpoint=hub.endpoint)

    assert len(hub.requests) == before


def test_int8_is_added_to_an_existing_download(
    hub: FakeHub, repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("test-org/tiny", repo_files)
    _register(monkeypatch, repo_files)
    path = download.download("tiny", location=here(), endpoint=hub.endpoint)
    fetched = len(hub.downloads())

    download.download("tiny", variant="int8", location=here(), endpoint=hub.endpoint)

    assert (path / "onnx" / "model_quantized.onnx").read_bytes() == repo_files[
        "onnx/model_quantized.onnx"
    ]
    assert len(hub.downloads()) == fetched + 1
    manifest = json.loads((path / download.MANIFEST).read_text())
    assert set(manifest["files"]) == {
        "config.json",
        "tokenizer.json",
        "onnx/model.onnx",
        "onnx/model_quantized.onnx",
    }


def test_an_int8_download_alone_is_a_model_directory_for_int8(
    hub: FakeHub, repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `model download NAME --variant int8` fetches (no fp32 weights) loads as int8."""
    hub.add("test-org/tiny", repo_files)
    _register(monkeypatch, repo_files)

    path = download.download("tiny", variant="int8", location=here(), endpoint=hub.endpoint)

    assert not (path / "onnx" / "model.onnx").exists()
    assert here().locate("tiny") == path
    embedder = Embedder.load("tiny", variant="int8", location=here())
    assert embedder.model_file == path / "onnx" / "model_quantized.onnx"
    with pytest.raises(exceptions.ModelNotFound, match="model download tiny --variant fp32"):
        Embedder.load("tiny", location=here())
    # Asked for fp32 with downloads on, the fp32 weights are fetched beside the int8 ones.
    policy = download.DownloadPolicy(endpoint=hub.endpoint)
    assert download.ensure("tiny", location=here(), policy=policy) == path
    assert (path / "onnx" / "model.onnx").read_bytes() == repo_files["onnx/model.onnx"]


@pytest.mark.parametrize(
    "case",
    [
        ("onnx/model.onnx", True, "pinned sha256"),
        ("onnx/model.onnx", False, "sha256 reported by the hub"),
        ("tokenizer.json", False, "git blob sha1 reported by the hub"),
    ],
)
def test_a_corrupted_file_is_rejected_and_not_cached(
    hub: FakeHub,
    repo_files: dict[str, bytes],
    embed_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[str, bool, str],
) -> None:
    corrupted, pinned, kind = case
    hub.add("test-org/tiny", repo_files)
    hub.corrupt("test-org/tiny", corrupted)
    _register(monkeypatch, repo_files, pin=(corrupted,) if pinned else ())

    with pytest.raises(exceptions.DownloadError, match=f"checksum mismatch \\({kind}"):
        download.download("tiny", location=here(), endpoint=hub.endpoint)

    assert _entries(embed_env) == []  # neither the model nor a staging directory


def test_a_pin_that_disagrees_with_the_hub_refuses_before_downloading(
    hub: FakeHub, repo_files: dict[str, bytes], embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _register(monkeypatch, repo_files, pin=("onnx/model.onnx",))
    hub.add("test-org/tiny", {**repo_files, "onnx/model.onnx": b"other weights"})

    with pytest.raises(exceptions.DownloadError, match="refusing to download"):
        download.download("tiny", location=here(), endpoint=hub.endpoint)

    assert not any(p.endswith("model.onnx") for p in hub.downloads())
    assert spec.name == "tiny" and _entries(embed_env) == []


def test_optional_files_may_be_absent(
    hub: FakeHub, repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("test-org/tiny", repo_files)
    files = {**repo_files, "1_Pooling/config.json": b"{}"}
    _register(monkeypatch, files, optional=("1_Pooling/config.json",))

    path = download.download("tiny", location=here(), endpoint=hub.endpoint)

    assert not (path / "1_Pooling").exists()


def test_a_missing_required_file_fails(
    hub: FakeHub, repo_files: dict[str, bytes], embed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("test-org/tiny", {k: v for k, v in repo_files.items() if k != "config.json"})
    _register(monkeypatch, repo_files)

    with pytest.raises(exceptions.DownloadError, match=r"has no config\.json"):
        download.download("tiny", location=here(), endpoint=hub.endpoint)
    assert _entries(embed_env) == []


def test_an_unknown_revision_fails(
    hub: FakeHub, repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("test-org/tiny", repo_files, commit="f" * 40)
    _register(monkeypatch, repo_files)

    with pytest.raises(
        exceptions.DownloadError, match=f"has no test-org/tiny at revision {COMMIT}"
    ):
        download.download("tiny", location=here(), endpoint=hub.endpoint)


def test_offline_download_says_what_to_do(embed_env: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(exceptions.DownloadError) as info:
        download.download("gte-small", location=here(), endpoint=f"http://127.0.0.1:{port}")

    message = str(info.value)
    assert f"cannot download gte-small from http://127.0.0.1:{port}" in message
    assert "embed-worker model download gte-small" in message
    assert "EMBED_MODEL_PATH" in message
    assert _entries(embed_env) == []


def test_download_of_an_unknown_model_fails() -> None:
    with pytest.raises(exceptions.ModelNotFound, match="knows: gte-small"):
        download.download("nope", location=here())


def test_the_pinned_load_by_name_searches_embed_model_path(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DESIGN.md pins `Embedder.load(name)` and EMBED_MODEL_PATH as the directories it searches:
    a caller with no Settings still finds the model there (and a bad unrelated variable does
    not stop it)."""
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "my-model")
    monkeypatch.setenv("EMBED_MODEL_PATH", str(tmp_path / "models"))
    monkeypatch.setenv("EMBED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EMBED_BATCH_SIZE", "not a number")
    from worker.embedder import Embedder as Pinned

    assert Pinned.load("my-model").embed(["hello"]).shape[0] == 1
    # The package's own class knows nothing of the settings: its callers pass the location.
    with pytest.raises(exceptions.ModelNotFound):
        Embedder.load("my-model", location=files.ModelLocation.of(None, tmp_path / "cache"))
