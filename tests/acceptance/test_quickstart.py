"""The README's quickstart as a newcomer runs it: a clean clone in a temporary directory, no
model on the machine, the hub reachable (the local stand-in, HF_ENDPOINT). `make demo` is
`embed-worker migrate` then `demo/demo.py`; both run from the clone, as the clone's code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cluster import REPO
from tests.support.fakehub import FakeHub
from tests.support.models import require_minilm, shared_models_dir
from tests.support.process import WorkerProcess
from tests.support.standin_hub import serve_gte_small

COMPRESSION = {"bz2", "gzip", "lzma", "zlib", "zipfile", "tarfile"}
PARALLEL = {"threading", "concurrent.futures", "queue", "asyncio", "sched", "subprocess"}


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    target = tmp_path / "embed-worker"
    subprocess.run(
        ["git", "clone", "--quiet", str(REPO), str(target)], check=True, capture_output=True
    )
    return target


@pytest.fixture
def newcomer_env(tmp_path: Path, clone: Path) -> dict[str, str]:
    """A shell with nothing of ours set, a fresh HOME (so no model cache), the hub stand-in."""
    require_minilm()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBED_", "HF_", "PG", "DATABASE_URL"))
    }
    env["HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = f"{tmp_path / 'pins'}{os.pathsep}{clone}"
    return env


def run(clone: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )


def searches(stdout: str) -> dict[str, list[str]]:
    """The demo's printed searches: query -> modules of the top rows."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("search: "):
            current = found.setdefault(line.removeprefix("search: ").strip("'"), [])
        elif line.startswith("  ") and current is not None and line.split()[0][0].isdigit():
            current.append(line.split()[1])
    return found


def assert_hint_finds_archives(hint: str, shell: dict[str, str], cwd: Path) -> None:
    """The demo's closing hint, its question filled in, run as printed in a shell of `shell`'s
    environment: it answers with the demo's documents on compression."""
    searched = subprocess.run(
        hint.replace("'your question'", "'reading compressed archives'"),
        shell=True,
        cwd=cwd,
        env=shell,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert searched.returncode == 0, searched.stderr
    assert any(word in searched.stdout.lower() for word in ("gzip", "compress", "archiv"))


def test_the_quickstart_downloads_the_model_and_finds_by_meaning(
    clone: Path, newcomer_env: dict[str, str], empty_dsn: str, tmp_path: Path
) -> None:
    with FakeHub() as hub:
        env = {
            **newcomer_env,
            **serve_gte_small(hub, shared_models_dir(), tmp_path / "pins"),
            "DATABASE_URL": empty_dsn,
        }
        migrated = run(clone, env, "-m", "worker", "migrate")
        assert migrated.returncode == 0, migrated.stderr

        demo = run(clone, env, "demo/demo.py")

        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "not on this machine yet; downloading it" in demo.stdout
        assert "worker embedded 50 of 50 rows" in demo.stdout
        found = searches(demo.stdout)
        assert set(found["compressing and decompressing data files"]) & COMPRESSION
        assert set(found["running work in parallel threads"]) & PARALLEL
        model_downloads = [p for p in hub.downloads() if p.endswith("model.onnx")]
        assert len(model_downloads) == 1
        cache = Path(env["HOME"]) / ".cache" / "embed-worker" / "gte-small"
        assert (cache / "onnx" / "model.onnx").is_file()

        # The closing hint works as printed, from a shell without the venv or DATABASE_URL.
        hint = demo.stdout.strip().splitlines()[-1].strip()
        assert hint.startswith("DATABASE_URL=") and "search embed_demo.documents" in hint
        shell = {k: v for k, v in env.items() if k != "DATABASE_URL"}
        shell["PATH"] = "/usr/bin:/bin"
        assert_hint_finds_archives(hint, shell, tmp_path)

        again = run(clone, env, "demo/demo.py")  # a second run downloads nothing
        assert again.returncode == 0 and "downloading" not in again.stdout
        assert len([p for p in hub.downloads() if p.endswith("model.onnx")]) == 1


def test_offline_with_a_model_directory_the_closing_hint_works_as_printed(
    clone: Path, newcomer_env: dict[str, str], dsn: str, tmp_path: Path
) -> None:
    """The README's offline quickstart: EMBED_MODEL_PATH names the models. The hint must carry
    it: a shell where it is unset would otherwise try to download the model, and fail."""
    models = shared_models_dir()
    env = {
        **newcomer_env,
        "DATABASE_URL": dsn,
        "EMBED_OFFLINE": "1",
        "EMBED_MODEL": "all-MiniLM-L6-v2",
        "EMBED_MODEL_PATH": str(models),
    }
    demo = run(clone, env, "demo/demo.py")
    assert demo.returncode == 0, demo.stdout + demo.stderr

    hint = demo.stdout.strip().splitlines()[-1].strip()
    # A new shell: none of the demo's settings, and no hub to download from.
    shell = {k: v for k, v in newcomer_env.items() if not k.startswith("EMBED_")}
    shell |= {"PATH": "/usr/bin:/bin", "HF_ENDPOINT": "http://127.0.0.1:9"}
    assert_hint_finds_archives(hint, shell, tmp_path)
    assert f"EMBED_MODEL_PATH={models.resolve()} " in hint

    # The demo printed the README's lines, and left one notion of the default model: the
    # README's next step, `watch()` with no model, gets the model this machine has.
    readme = (clone / "README.md").read_text()
    for line in ("inserted 50 paragraphs into embed_demo.documents (model all-MiniLM-L6-v2)",):
        assert line in readme and line in demo.stdout, demo.stdout
    assert re.search(r"^worker embedded 50 of 50 rows in [0-9.]+ s$", demo.stdout, re.M)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE documents (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT embeddings.watch('documents', 'body')")
        model = conn.execute(
            "SELECT model FROM embeddings.targets WHERE source = 'documents'::regclass"
        ).fetchone()
    assert model == ("all-MiniLM-L6-v2",)


def test_offline_the_demo_says_exactly_what_to_fetch(
    clone: Path, newcomer_env: dict[str, str], dsn: str
) -> None:
    env = {**newcomer_env, "DATABASE_URL": dsn, "EMBED_OFFLINE": "1"}

    demo = run(clone, env, "demo/demo.py")

    assert demo.returncode == 1
    assert "downloads are off (EMBED_OFFLINE=1)" in demo.stderr
    assert "embed-worker model download gte-small" in demo.stderr
    assert "onnx/model.onnx from https://huggingface.co/Supabase/gte-small" in demo.stderr


def test_the_demo_judges_by_the_table_when_another_worker_runs(
    clone: Path, newcomer_env: dict[str, str], dsn: str, worker_env: dict[str, Any]
) -> None:
    other = WorkerProcess(dsn, worker_env, http=False)  # already running on the database
    try:
        env = {**newcomer_env, **worker_env, "DATABASE_URL": dsn}
        for _ in range(3):
            demo = run(clone, env, "demo/demo.py")
            assert demo.returncode == 0, demo.stdout + demo.stderr
            assert "worker embedded 50 of 50 rows" in demo.stdout
    finally:
        other.stop()


def test_concurrent_processes_download_the_model_once(
    clone: Path, newcomer_env: dict[str, str], tmp_path: Path
) -> None:
    with FakeHub() as hub:
        env = {**newcomer_env, **serve_gte_small(hub, shared_models_dir(), tmp_path / "pins")}
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "worker", "embed", "hello world"],
                cwd=clone,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        results = [p.communicate(timeout=600) for p in processes]

        assert [p.returncode for p in processes] == [0, 0, 0], results
        assert all(len(json.loads(out)[0]) == 384 for out, _ in results)
        assert len([p for p in hub.downloads() if p.endswith("model.onnx")]) == 1
