"""Today's commands and HTTP routes against a schema of another release (a dump at 0.2.0 and at
0.3.0, fixtures/; a schema stamped with a revision newer than this package's): each says what
the schema is and what to run, as `run` does (schema.mismatch()), never a raw SQL error such as
`schema "embeddings_internal" does not exist`."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.migration.scenarios import restore
from tests.support.cluster import Cluster
from tests.support.login_roles import login_role
from tests.support.models import MINILM, require_minilm
from tests.support.process import WorkerProcess, run_cli, wait_for
from worker import schema

# What each release's schema is said to be: 0.3.0's by its revision (its revision function was
# embeddings.schema_revision(), not this release's embeddings_internal one).
SAID = {
    "0002": "the database's schema is of an older release than this worker's",
    "0019": "the database's schema is release 0.3.0 (revision 0019), older than this worker's",
}
COMMANDS = [
    ("status",),
    ("status", "items", "--json"),
    ("search", "items", "row"),
    ("plan", "items"),
    ("failures",),
    ("sweep",),
]


@pytest.fixture(scope="module", params=sorted(SAID))
def older(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[tuple[str, str]]:
    """A database at an older release (fixtures/at_<revision>_every_kind.sql.gz): its
    revision, and its DSN."""
    revision = str(request.param)
    name = restore(cluster, f"at_{revision}_every_kind")
    yield revision, cluster.dsn(name)
    cluster.drop_database(name)


def _newer(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE public.embed_worker_alembic_version SET version_num = '0021'")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_on_an_older_schema_says_to_migrate(
    older: tuple[str, str], command: tuple[str, ...]
) -> None:
    """Only `run` checked the release: `status`, `search`, `plan` on 0.3.0 said `schema
    "embeddings_internal" does not exist`, and so on."""
    revision, dsn = older
    result = run_cli(*command, env={"DATABASE_URL": dsn})

    assert result.returncode == 1, result.stdout + result.stderr
    assert SAID[revision] in result.stderr, result.stderr
    assert " migrate` of release " in result.stderr and "DATABASE_URL=" in result.stderr
    assert "does not exist" not in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_embed_needs_the_schema_only_for_what_it_reads_there_and_model_list_checks_it(
    older: tuple[str, str], tiny_model_paths: str
) -> None:
    """`embed` and `model list` did not check the release: `model list` listed the registry of
    an older schema as this release's, and `embed` with no model took the older schema's
    default, or named a remote model it then said it could not find. A model named needs no
    database: it is embedded whatever the schema."""
    revision, dsn = older
    env = {"DATABASE_URL": dsn, "EMBED_MODEL_PATH": tiny_model_paths, "EMBED_MODEL": ""}

    path = next(
        str(Path(entry) / "tiny-a")
        for entry in tiny_model_paths.split(os.pathsep)
        if (Path(entry) / "tiny-a").is_dir()
    )
    named = run_cli("embed", "--model", path, "hello", env=env)
    assert named.returncode == 0, named.stderr
    assert len(json.loads(named.stdout)) == 1

    # (a name that is not the catalog's may be registered in the database, which wins over a
    # directory of that name)
    for model in ([], ["--model", "tiny-a"], ["--model", "registered-elsewhere"]):
        refused = run_cli("embed", *model, "hello", env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert SAID[revision] in refused.stderr, refused.stderr
        assert " migrate` of release " in refused.stderr and refused.stdout == ""
        assert "or name the model with --model or EMBED_MODEL: a catalog model" in refused.stderr

    listed = run_cli("model", "list", env=env)
    assert listed.returncode == 1, listed.stdout + listed.stderr
    assert SAID[revision] in listed.stderr and listed.stdout == ""
    assert "Traceback" not in listed.stderr


def test_doctor_on_an_older_schema_fails_its_schema_check_with_the_fix(
    older: tuple[str, str],
) -> None:
    """doctor said `ok schema`, then `column t.rerank_model does not exist` (0.2.0) or `schema
    "embeddings_internal" does not exist` (0.3.0)."""
    revision, dsn = older
    result = run_cli("doctor", env={"DATABASE_URL": dsn})

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAIL  schema: {SAID[revision]}\n" in result.stdout, result.stdout
    assert "      fix: run `DATABASE_URL=" in result.stdout
    assert "ok    schema" not in result.stdout
    assert "ERROR" not in result.stderr and "does not exist" not in result.stdout + result.stderr


def test_a_role_that_may_not_read_the_revision_still_learns_0_3_0_is_older(
    cluster: Cluster,
) -> None:
    """0.3.0's revision function is its worker roles' only: a search role without it is told
    the schema is older all the same (today's schema has this release's function)."""
    name = restore(cluster, "at_0019_every_kind")
    dsn = cluster.dsn(name)
    try:
        with (
            psycopg.connect(dsn, autocommit=True) as admin,
            login_role(admin, dsn, "reader", "SELECT ON items") as reader_dsn,
            psycopg.connect(reader_dsn, autocommit=True) as conn,
        ):
            found = schema.mismatch(conn)
            assert found is not None and not found.newer
            assert str(found).startswith(SAID["0002"] + ": run `embed-worker migrate` of"), found
    finally:
        cluster.drop_database(name)


def test_a_newer_schema_is_refused_by_every_command_and_by_migrate(dsn: str) -> None:
    """A schema a later release migrated: doctor said `ok schema`, and `migrate` said `Can't
    locate revision identified by '0021'`."""
    _newer(dsn)
    env = {"DATABASE_URL": dsn}

    status = run_cli("status", env=env)
    assert status.returncode == 1, status.stderr
    assert "the database's schema is at revision 0021, newer than this worker" in status.stderr
    assert "use that release's embed-worker" in status.stderr

    doctor = run_cli("doctor", env=env)
    assert doctor.returncode == 1, doctor.stdout
    assert "FAIL  schema: the database's schema is at revision 0021, newer" in doctor.stdout
    assert "fix: a later release migrated it; use that release's embed-worker" in doctor.stdout

    migrate = run_cli("migrate", env=env)
    assert migrate.returncode == 1, migrate.stderr
    assert "Can't locate revision" not in migrate.stderr
    assert "at revision 0021, newer than this package" in migrate.stderr, migrate.stderr
    assert "use that release's embed-worker (its migrate, its worker)" in migrate.stderr
    with psycopg.connect(dsn) as conn:
        assert schema.current_revision(conn) == "0021"  # nothing changed


def _post(url: str, body: object) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def test_a_waiting_worker_answers_searches_503_naming_migrate(
    cluster: Cluster, model_path: str
) -> None:
    """A worker started before `migrate` answered POST /search 500 with the raw error, and its
    /readyz said only `model ...: starting (waiting for the database and the schema)`. POST
    /embed with no model embedded with gte-small (the database's default unread), and one
    naming a model registered there answered 400: both 503 now; one naming a model the worker
    has without the database is served."""
    require_minilm()
    name = restore(cluster, "at_0019_every_kind")
    worker = WorkerProcess(cluster.dsn(name), {"EMBED_MODEL_PATH": model_path, "EMBED_MODEL": ""})
    try:
        wait_for(
            lambda: any("migrate" in r.get("message", "") for r in worker.log_records()),
            60,
            what="the worker saying the schema must be migrated",
        )
        status, headers, body = _post(worker.url + "/search", {"table": "items", "query": "x"})
        assert status == 503, body
        assert headers.get("Retry-After") == "10"
        error = json.loads(body)["error"]
        assert error.startswith(SAID["0019"] + ": run `embed-worker migrate` of release"), error

        for asked in ({"input": "x"}, {"input": "x", "model": "registered-elsewhere"}):
            status, headers, body = _post(worker.url + "/embed", asked)
            assert status == 503, body
            assert headers.get("Retry-After") == "10"
            assert json.loads(body)["error"].startswith(SAID["0019"] + ": run `embed-worker"), body
        status, _, body = _post(worker.url + "/embed", {"input": "x", "model": MINILM})
        assert status == 200, body
        assert len(json.loads(body)["embedding"]) > 0

        status, body = worker.get("/readyz")
        assert status == 503, body
        (problem,) = json.loads(body)["problems"]
        assert problem.startswith(f"starting: {SAID['0019']}: run `embed-worker migrate`"), body
        # /metrics said database_up 1 and had no model_loaded series: no alert could fire.
        status, body = worker.get("/metrics")
        assert status == 200
        assert b"\nembed_worker_database_up 1.0\n" in body
        assert b"\nembed_worker_ready 0.0\n" in body
        assert worker.proc.poll() is None
    finally:
        worker.stop()
        cluster.drop_database(name)
