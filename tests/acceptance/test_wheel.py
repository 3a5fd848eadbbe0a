"""The wheel installed without a checkout: built from this checkout, installed into a fresh
virtual environment in a temporary directory, and run from there against the test cluster with
nothing of the checkout on the path: `--version`, `migrate`, `run --once`, `status`, and the
demo's two searches.

The demo itself (demo/demo.py) is not in the wheel: it drops and recreates a schema of its own,
which a command of an installed package should not do to whatever database it is pointed at.
What it does is SQL plus the installed CLI, so this test does the same: the demo's table and
paragraphs through SQL, then the worker and the searches through the installed `embed-worker`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import wheel as wheellib
from tests.support.cluster import REPO
from tests.support.models import MINILM, require_minilm
from worker import schema
from worker.schema import files as schema_files

pytestmark = pytest.mark.slow

COMPRESSION = {"bz2", "gzip", "lzma", "zlib", "zipfile", "tarfile"}
PARALLEL = {"threading", "concurrent.futures", "queue", "asyncio", "sched", "subprocess"}


def load_demo() -> Any:
    """demo/demo.py (a script, not a package): its paragraphs and queries."""
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "demo" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wheellib.build(tmp_path_factory.mktemp("sdist"), kind="sdist")


@pytest.fixture(scope="module", params=["wheel", "sdist"])
def venv(
    request: pytest.FixtureRequest, wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[wheellib.Venv]:
    """Each released artefact installed as a user installs it: the wheel, and the sdist (pip
    builds it), each into a fresh virtual environment outside the checkout."""
    artefact = wheel if request.param == "wheel" else request.getfixturevalue("sdist")
    root = tmp_path_factory.mktemp(f"installed-{request.param}") / "venv"
    yield wheellib.install(artefact, root, dependencies_of=wheel)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory outside the checkout."""
    assert not tmp_path.resolve().is_relative_to(REPO)
    return tmp_path


def cli(venv: wheellib.Venv, cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv.bin / "embed-worker"), *argv],
        cwd=cwd,
        env=wheellib.clean_env(venv, **env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_wheel_holds_the_package_its_schema_and_migrations(wheel: Path) -> None:
    assert wheel.name == f"embed_worker-{wheellib.version()}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"worker", f"embed_worker-{wheellib.version()}.dist-info"}
    shipped = {n.removeprefix("worker/_sql/") for n in names if n.startswith("worker/_sql/")}
    assert shipped == {
        p.relative_to(REPO / "sql").as_posix() for p in (REPO / "sql").rglob("*.sql")
    }
    assert "worker/_migrations/env.py" in names
    assert "worker/queries.sql" in names
    assert f"embed_worker-{wheellib.version()}.dist-info/entry_points.txt" in names


def test_the_sdist_holds_tracked_files_only(sdist: Path) -> None:
    """hatch's sdist takes every file of the checkout that git does not ignore, through links:
    a tracked link to a virtualenv (.venv-main, committed by mistake) once put 240 MB of
    site-packages into it."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"this checkout has no git history to compare the sdist with: {exc}")
    tracked = {p for p in listed.stdout.decode().split("\0") if p}
    with tarfile.open(sdist) as archive:
        members = {m.name.partition("/")[2] for m in archive.getmembers() if not m.isdir()}
    assert members - {"PKG-INFO"} <= tracked, sorted(members - tracked - {"PKG-INFO"})[:10]
    assert {"pyproject.toml", "README.md", "worker/__init__.py"} <= members


def test_the_installed_package_runs_with_nothing_of_the_checkout_on_its_path(
    venv: wheellib.Venv, elsewhere: Path
) -> None:
    probe = venv.python(
        "-c",
        "import json, sys, worker; print(json.dumps({'file': worker.__file__, 'path': sys.path}))",
        cwd=elsewhere,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert Path(found["file"]).resolve().is_relative_to(venv.root.resolve())
    on_path = [p for p in found["path"] if p and Path(p).resolve().is_relative_to(REPO)]
    assert on_path == []

    version = cli(venv, elsewhere, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"embed-worker {wheellib.version()}"


def test_the_installed_package_prints_the_files_the_operating_steps_install(
    venv: wheellib.Venv, elsewhere: Path
) -> None:
    """docs/operating.md's systemd steps and monitoring section, with no checkout: the unit,
    the env file, the alert rules and the dashboard come from `embed-worker deploy`."""
    from worker.cli.deploy import FILES

    for name, (_, path) in FILES.items():
        printed = cli(venv, elsewhere, "deploy", name)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == (REPO / path).read_text(), name
    unknown = cli(venv, elsewhere, "deploy", "helm")
    assert (
        unknown.returncode == 2
        and "choose from 'systemd', 'env', 'alerts', 'dashboard', 'kubernetes'" in unknown.stderr
    )
    # docs/scaling.md's kustomization, written where the user says, never over their edits.
    written = cli(venv, elsewhere, "deploy", "kubernetes", "k8s")
    assert written.returncode == 0, written.stderr
    shipped = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
    assert sorted(p.name for p in (elsewhere / "k8s").iterdir()) == [p.name for p in shipped]
    for manifest in shipped:
        assert (elsewhere / "k8s" / manifest.name).read_text() == manifest.read_text()
    again = cli(venv, elsewhere, "deploy", "kubernetes", "k8s")
    assert again.returncode == 1 and "nothing written" in again.stderr
    assert cli(venv, elsewhere, "deploy", "kubernetes").returncode != 0


def test_migrate_run_status_and_the_demos_searches(
    venv: wheellib.Venv, elsewhere: Path, empty_dsn: str
) -> None:
    models = require_minilm().parent
    env = {
        "DATABASE_URL": empty_dsn,
        "EMBED_MODEL": MINILM,
        "EMBED_MODEL_PATH": str(models),
        "EMBED_OFFLINE": "1",
        "EMBED_THREADS": "1",
    }
    migrated = cli(venv, elsewhere, "migrate", **env)
    assert migrated.returncode == 0, migrated.stderr
    # Every revision up to the newest the package carries, named by its release ("(0.3.0)";
    # "(0.4.0, unreleased)" while the open release has a revision of its own).
    head = schema.head_revision()
    assert f"applied {head} ({schema_files.release_of(head)})" in migrated.stdout

    # What demo/demo.py does before its worker runs.
    demo = load_demo()
    texts = demo.paragraphs()
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA embed_demo")
        conn.execute(
            "CREATE TABLE embed_demo.documents ("
            " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, module text NOT NULL, body text)"
        )
        conn.execute(
            "SELECT embeddings.watch('embed_demo.documents', 'body', model => %s)", (MINILM,)
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO embed_demo.documents (module, body) VALUES (%s, %s)", texts
            )

        ran = cli(venv, elsewhere, "run", "--once", **env)
        assert ran.returncode == 0, ran.stderr

        status = cli(venv, elsewhere, "status", "--json", **env)
        assert status.returncode == 0, status.stderr
        (row,) = json.loads(status.stdout)
        assert row["target"] == "embed_demo.documents.embedding"
        assert (row["embedded_rows"], row["pending_jobs"], row["failed_jobs"]) == (len(texts), 0, 0)
        shown = cli(venv, elsewhere, "status", **env)
        assert "embed_demo.documents.embedding" in shown.stdout and "done" in shown.stdout

        # Keyed by the key's text: whether --json keeps the key's type or not.
        modules = {
            str(key): module
            for key, module in conn.execute("SELECT id, module FROM embed_demo.documents")
        }
    for query, expected in zip(demo.QUERIES, (COMPRESSION, PARALLEL), strict=True):
        searched = cli(
            venv, elsewhere, "search", "embed_demo.documents", query, "-k", "3", "--json", **env
        )
        assert searched.returncode == 0, searched.stderr
        found = {modules[str(r["key"])] for r in json.loads(searched.stdout)}
        assert found & expected, (query, found)

    doctor = cli(venv, elsewhere, "doctor", **env)
    assert "Traceback" not in doctor.stdout + doctor.stderr, doctor.stderr
    assert doctor.returncode == 0, doctor.stdout
