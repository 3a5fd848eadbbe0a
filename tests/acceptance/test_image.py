"""The container image, built for real with the classic builder (Debian's dockerd) on a stand-in
base image, and run against the test cluster: `migrate`, then `run --once` with a model mounted
read-only; unprivileged; the HEALTHCHECK command; SIGTERM. Skips with the reason when dockerd
cannot start here."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import docker as dockerlib
from tests.support import wheel as wheellib
from tests.support.cluster import REPO, free_port
from tests.support.models import MINILM, require_minilm
from tests.support.process import wait_for

pytestmark = pytest.mark.slow

Conn = psycopg.Connection[Any]
TAG = "embed-worker-test/embed-worker:test"


@pytest.fixture(scope="module")
def docker() -> Iterator[dockerlib.Docker]:
    with dockerlib.engine() as engine:
        yield engine


@pytest.fixture(scope="module")
def image(docker: dockerlib.Docker, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Built as a release is: `make dist`'s wheel in dist/ (here this checkout's, built by the
    session), the Dockerfile beside it. Its dependencies come from the test run's wheelhouse
    (the offline build the Dockerfile describes), so the build needs no package index."""
    context = tmp_path_factory.mktemp("image-context")
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy(REPO / name, context / name)
    (context / "dist").mkdir()
    shutil.copy(wheel, context / "dist" / wheel.name)
    for dependency in wheellib.wheelhouse(wheel).glob("*.whl"):
        shutil.copy(dependency, context / "dist" / dependency.name)
    base = dockerlib.python_base(docker)
    docker.run(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--build-arg",
        "BAKE_MODEL=false",  # the model comes from a read-only mount (no Hugging Face here)
        "--build-arg",
        "PIP_NO_INDEX=1",
        "-t",
        TAG,
        str(context),
        timeout=1800,
    )
    return TAG


def test_the_image_runs_the_wheel_it_was_given(docker: dockerlib.Docker, image: str) -> None:
    shown = docker.run("run", "--rm", image, "--version")
    assert shown.stdout.strip() == f"embed-worker {wheellib.version()}"
    where = docker.run(
        "run", "--rm", "--entrypoint", "python", image, "-c", "import worker; print(worker.__file__)"
    )  # fmt: skip
    assert where.stdout.strip().startswith("/opt/embed-worker/lib/")
    # No source tree: the context held dist/ only.
    listing = docker.run("run", "--rm", "--entrypoint", "sh", image, "-c", "ls / /tmp")
    assert "dist" not in listing.stdout.split() and "src" not in listing.stdout.split()


def container_env(dsn: str, **extra: str) -> list[str]:
    env = {"DATABASE_URL": dsn, "EMBED_MODEL": MINILM, "EMBED_MODEL_PATH": "/models", **extra}
    return [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]


def models_mount() -> list[str]:
    return ["-v", f"{require_minilm().parent}:/models:ro"]


def count(conn: Conn, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_the_image_migrates_and_embeds_as_an_unprivileged_user(
    docker: dockerlib.Docker, image: str, empty_dsn: str
) -> None:
    migrated = docker.run(
        "run", "--rm", "--network", "host", *container_env(empty_dsn), image, "migrate"
    )
    assert migrated.returncode == 0
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MINILM,))
        conn.execute(
            "INSERT INTO docs SELECT g, 'document number ' || g FROM generate_series(1, 60) g"
        )
        ran = docker.run(
            "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", *models_mount(),
            # a port of its own: the image's 8080 may be a worker's on this host already
            *container_env(empty_dsn, EMBED_HTTP_PORT=str(free_port())), image, "run", "--once",
        )  # fmt: skip
        assert ran.returncode == 0
        assert count(conn, "SELECT count(embedding) FROM docs") == 60
        assert count(conn, "SELECT count(*) FROM pgmq.q_embedding_jobs") == 0

    config = json.loads(docker.run("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] not in ("", "root", "0")
    uid = docker.run(
        "run", "--rm", "--entrypoint", "python", image, "-c", "import os; print(os.getuid())"
    )
    assert int(uid.stdout) != 0
    # No pip and no compiler in the final image.
    tools = docker.run(
        "run", "--rm", "--entrypoint", "sh", image, "-c", "command -v pip pip3 gcc cc || true"
    )  # fmt: skip
    assert tools.stdout.strip() == ""


def test_the_healthcheck_and_sigterm(docker: dockerlib.Docker, image: str, dsn: str) -> None:
    config = json.loads(docker.run("image", "inspect", image).stdout)[0]["Config"]
    kind, *check = config["Healthcheck"]["Test"]
    assert kind == "CMD"
    # The check fails where nothing listens...
    nothing = docker.run(
        "run", "--rm", "--network", "host", "-e", f"EMBED_HTTP_PORT={free_port()}",
        "--entrypoint", check[0], image, *check[1:], check=False,
    )  # fmt: skip
    assert nothing.returncode != 0
    # ...and passes inside a running worker.
    port = free_port()
    name = f"embed-worker-test-{uuid.uuid4().hex[:8]}"
    docker.run(
        "run", "-d", "--name", name, "--network", "host", *models_mount(),
        *container_env(dsn, EMBED_HTTP_PORT=str(port)), image,
    )  # fmt: skip
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(healthy, 120, 0.5, "the container's worker to be ready")
        assert docker.run("exec", name, *check).returncode == 0
        docker.run("stop", "-t", "45", name)
        assert docker.run("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        docker.run("rm", "-f", name, check=False)


def test_the_image_size_is_what_the_docs_say(docker: dockerlib.Docker, image: str) -> None:
    """The layers of ours on top of the base, against the figure in docs/operating.md."""
    size = int(docker.run("image", "inspect", "-f", "{{.Size}}", image).stdout)
    base = int(docker.run("image", "inspect", "-f", "{{.Size}}", dockerlib.PYTHON).stdout)
    ours_mb = (size - base) / 1e6
    operating = (REPO / "docs" / "operating.md").read_text()
    documented = [int(n) for n in re.findall(r"adds (\d+) MB to its base", operating)]
    assert documented, "docs/operating.md states what the image adds to its base"
    assert abs(ours_mb - documented[0]) <= 0.1 * documented[0], ours_mb
