"""One notion of "the default model" (issue 28 §4): EMBED_MODEL when set, else the database's
(embeddings.default_model()) wherever a database is reachable, else gte-small; and a missing
model's doctor line says exactly what to run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cluster import REPO, free_port
from tests.support.fakehub import FakeHub
from tests.support.models import shared_models_dir
from tests.support.process import run_cli
from tests.support.standin_hub import serve_gte_small

Conn = psycopg.Connection[Any]


def doctor_lines(stdout: str, check: str) -> tuple[str, str]:
    """The finding line of `check` and the fix line after it ("" when none)."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^(ok|warn|FAIL)\s+{re.escape(check)}:", line):
            after = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return line, after.removeprefix("fix: ") if after.startswith("fix:") else ""
    raise AssertionError(f"no {check!r} line in:\n{stdout}")


def test_embed_uses_the_database_default_when_no_model_is_named(
    conn: Conn, dsn: str, minilm: str
) -> None:
    conn.execute("SELECT embeddings.set_default_model(%s)", (minilm,))
    env = {"DATABASE_URL": dsn, "EMBED_MODEL": ""}

    result = run_cli("embed", "hello world", env=env)
    named = run_cli("embed", "--model", minilm, "hello world", env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(named.stdout)
    assert f"model {minilm} (the database's default model" in result.stderr


def test_embed_says_which_default_it_used(conn: Conn, dsn: str, minilm: str) -> None:
    conn.execute("SELECT embeddings.set_default_model(%s)", (minilm,))
    explicit = run_cli("embed", "hi", env={"DATABASE_URL": dsn, "EMBED_MODEL": minilm})
    assert explicit.returncode == 0, explicit.stderr
    assert f"model {minilm} (EMBED_MODEL)" in explicit.stderr

    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/embed"
    offline = run_cli("embed", "hi", env={"DATABASE_URL": nowhere, "EMBED_MODEL": ""})
    assert "model gte-small (the built-in default: could not ask the database" in offline.stderr


def test_doctor_checks_the_database_default_and_names_both_when_they_differ(
    conn: Conn, dsn: str, minilm: str
) -> None:
    conn.execute("SELECT embeddings.set_default_model(%s)", (minilm,))

    followed = run_cli("doctor", env={"DATABASE_URL": dsn, "EMBED_MODEL": ""})
    line, _ = doctor_lines(followed.stdout, "default model")
    assert line.startswith("ok") and minilm in line and "embeddings.default_model()" in line
    assert doctor_lines(followed.stdout, f"model {minilm}")[0].startswith("ok")
    assert "model gte-small" not in followed.stdout

    pinned = run_cli("doctor", env={"DATABASE_URL": dsn, "EMBED_MODEL": "gte-small"})
    line, fix = doctor_lines(pinned.stdout, "default model")
    assert line.startswith("warn")
    assert "EMBED_MODEL=gte-small" in line and f"database's default is {minilm}" in line
    assert "unset EMBED_MODEL" in fix and "SELECT embeddings.set_default_model('gte-small');" in fix


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_doctor_names_the_command_that_fetches_a_missing_model(
    conn: Conn, dsn: str, tmp_path: Path, variant: str
) -> None:
    # The README's "In 30 seconds" SQL on a machine without any model, downloads off.
    conn.execute("CREATE TABLE documents (id bigint PRIMARY KEY, title text, body text)")
    conn.execute("SELECT embeddings.watch('documents', 'body')")
    (tmp_path / "models").mkdir()
    env = {
        "DATABASE_URL": dsn,
        "EMBED_MODEL": "",
        "EMBED_OFFLINE": "1",
        "EMBED_MODEL_VARIANT": variant,
        "EMBED_MODEL_PATH": str(tmp_path / "models"),
        "EMBED_CACHE_DIR": str(tmp_path / "cache"),
    }

    result = run_cli("doctor", env=env)

    line, fix = doctor_lines(result.stdout, "model gte-small")
    assert line.startswith("FAIL") and "downloads are off (EMBED_OFFLINE=1)" in line
    assert f"model download gte-small --variant {variant} --cache-dir" in fix
    weights = "onnx/model_quantized.onnx" if variant == "int8" else "onnx/model.onnx"
    assert f"{tmp_path / 'models'}/gte-small/ holding tokenizer.json" in fix
    assert weights in fix
    assert "see the message" not in result.stdout


def test_the_printed_fetch_command_works_as_printed(conn: Conn, dsn: str, tmp_path: Path) -> None:
    conn.execute("CREATE TABLE documents (id bigint PRIMARY KEY, title text, body text)")
    conn.execute("SELECT embeddings.watch('documents', 'body')")
    env = {
        "DATABASE_URL": dsn,
        "EMBED_MODEL": "",
        "EMBED_MODEL_PATH": "",
        "EMBED_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": f"{tmp_path / 'pins'}{os.pathsep}{REPO}",
    }
    offline = {**env, "EMBED_OFFLINE": "1"}
    line, fix = doctor_lines(run_cli("doctor", env=offline).stdout, "model gte-small")
    assert line.startswith("FAIL")
    command = next(c for c in re.findall(r"`([^`]+)`", fix) if "model download" in c)

    with FakeHub() as hub:  # the hub reachable: where the operator runs the command
        hub_env = serve_gte_small(hub, shared_models_dir(), tmp_path / "pins")
        shell = {**os.environ, **env, **hub_env, "PATH": "/usr/bin:/bin"}
        shell.pop("EMBED_OFFLINE", None)
        fetched = subprocess.run(
            command, shell=True, env=shell, capture_output=True, text=True, timeout=300
        )
        assert fetched.returncode == 0, f"{shlex.quote(command)}: {fetched.stderr}"

    line, fix = doctor_lines(
        run_cli("doctor", env={**offline, **hub_env}).stdout, "model gte-small"
    )
    assert line.startswith("ok"), (line, fix)


def test_doctor_says_where_a_model_without_a_download_goes(conn: Conn, dsn: str) -> None:
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('in-house', 384, 512, 'mean')"
    )
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'in-house')")

    result = run_cli("doctor", env={"DATABASE_URL": dsn, "EMBED_MODEL_PATH": "/srv/models"})

    line, fix = doctor_lines(result.stdout, "model in-house")
    assert line.startswith("FAIL")
    assert "/srv/models/in-house/ holding tokenizer.json and model.onnx" in fix


def test_set_default_model_refuses_null(conn: Conn) -> None:
    """set_default_model(NULL) said unknown model "<NULL>"."""
    with pytest.raises(psycopg.errors.NullValueNotAllowed) as refused:
        conn.execute("SELECT embeddings.set_default_model(NULL)")
    assert str(refused.value.diag.message_primary) == (
        "embeddings.set_default_model(): name must not be NULL"
    )
