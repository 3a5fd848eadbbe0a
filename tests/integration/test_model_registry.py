"""Registering and unregistering models (sql/46_providers.sql): a built-in model's name is that
model everywhere (the SQL side's built_in_models() are the worker's catalog); register_model()
names the provider it keeps or changes; unregister_model() removes a registration no target,
change or default needs; and watch()'s hint for an unknown model says how to register one."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support.process import cli_json, run_cli
from worker.models import catalog
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

ROW = "SELECT provider, dimensions, pooling, max_tokens, source, endpoint FROM embeddings.models WHERE name = %s"


def row(conn: Conn, name: str) -> tuple[Any, ...] | None:
    return conn.execute(ROW, (name,)).fetchone()


def test_the_sql_built_in_models_are_the_workers_catalog(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT name, dimensions, max_tokens, pooling, source"
        " FROM embeddings_internal.built_in_models() ORDER BY name"
    ).fetchall()
    assert rows == [
        (s.name, s.dim, s.max_tokens, s.pooling, s.repo_id)
        for s in sorted(catalog.REGISTRY.values(), key=lambda s: s.name)
    ]
    # ... and the install's rows of them say the same
    installed = conn.execute(
        "SELECT name, dimensions, max_tokens, pooling, source FROM embeddings.models"
        " WHERE provider = 'local' ORDER BY name"
    ).fetchall()
    assert installed == rows


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # the tester's call: a built-in name (and the database's default) as a remote model
        (
            "SELECT embeddings.register_model('gte-small', 64, 'openai', 'http://127.0.0.1:9/v1',"
            " credential => '')",
            "gte-small is a built-in model, which the worker runs from its own files",
        ),
        (
            "SELECT embeddings.register_model('all-MiniLM-L6-v2', 384, 'huggingface')",
            "all-MiniLM-L6-v2 is a built-in model",
        ),
        (
            "SELECT embeddings.register_model('gte-small', 768, provider => 'local')",
            "gte-small is a built-in model of 384 dimensions, not 768",
        ),
        (
            "SELECT embeddings.register_model('bge-small-en-v1.5', 384, pooling => 'mean')",
            "bge-small-en-v1.5 is a built-in model with cls pooling, not mean",
        ),
    ],
)
def test_a_built_in_name_is_not_registered_as_another_model(
    conn: Conn, call: str, message: str
) -> None:
    before = conn.execute("SELECT * FROM embeddings.models ORDER BY name").fetchall()

    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message) as refused:
        conn.execute(call)

    hint = refused.value.diag.message_hint or ""
    assert "under a name of its own" in hint and "provider => 'local'" in hint, hint
    assert conn.execute("SELECT * FROM embeddings.models ORDER BY name").fetchall() == before


def test_a_built_in_model_registered_without_a_provider_is_its_own_row(conn: Conn) -> None:
    """Re-registering a built-in model (to give it a description, say) needs no provider: it is
    local, of the catalog's dimensions, pooling, limit and source."""
    installed = row(conn, "bge-small-en-v1.5")

    conn.execute(
        "SELECT embeddings.register_model('bge-small-en-v1.5', 384, description => 'ours')"
    )

    assert (
        row(conn, "bge-small-en-v1.5")
        == installed
        == (
            "local",
            384,
            "cls",
            512,
            "BAAI/bge-small-en-v1.5",
            None,
        )
    )


def test_re_registering_a_model_without_naming_a_provider_keeps_its_provider(conn: Conn) -> None:
    """A local directory of one's own, registered again to change a limit, stays local (the
    provider argument defaulted to 'openai', which moved it to api.openai.com); a remote model
    stays remote; naming a provider changes it."""
    conn.execute("SELECT embeddings.register_model('mine', 768, provider => 'local')")
    conn.execute(
        "SELECT embeddings.register_model('far', 16, 'huggingface', remote_model => 'org/far')"
    )

    conn.execute("SELECT embeddings.register_model('mine', 768, max_tokens => 256)")
    conn.execute("SELECT embeddings.register_model('far', 16, max_tokens => 100)")

    assert row(conn, "mine") == ("local", 768, "mean", 256, None, None)
    assert row(conn, "far")[:4] == ("huggingface", 16, "mean", 100)  # type: ignore[index]
    conn.execute(
        "SELECT embeddings.register_model('mine', 768, 'openai', 'http://127.0.0.1:9/v1',"
        " credential => '')"
    )
    assert row(conn, "mine")[0] == "openai"  # type: ignore[index]
    # a new model without a provider is OpenAI's, as before
    conn.execute("SELECT embeddings.register_model('text-embedding-3-small', 1536)")
    assert row(conn, "text-embedding-3-small")[0] == "openai"  # type: ignore[index]


def test_re_registering_a_remote_model_without_naming_a_provider_keeps_where_it_goes(
    conn: Conn,
) -> None:
    """A self-hosted server's model, registered again to raise a limit: its endpoint, model id
    and credential stay (they became OpenAI's defaults: the texts, and the key of credential
    'openai', went to api.openai.com); naming the provider starts from its defaults."""
    conn.execute(
        "SELECT embeddings.register_model('gpu', 1024, 'openai', 'http://127.0.0.1:9/v1',"
        " 'BAAI/bge-m3', credential => '')"
    )
    where = "SELECT endpoint, remote_model, credential, max_in_flight FROM embeddings.models WHERE name = 'gpu'"

    conn.execute("SELECT embeddings.register_model('gpu', 1024, max_in_flight => 8)")

    assert conn.execute(where).fetchone() == ("http://127.0.0.1:9/v1", "BAAI/bge-m3", None, 8)
    conn.execute("SELECT embeddings.register_model('gpu', 1024, 'openai')")
    assert conn.execute(where).fetchone() == ("https://api.openai.com/v1", "gpu", "openai", 4)


def shadow_built_in(conn: Conn, name: str = "gte-small", dimensions: int = 64) -> None:
    """What register_model() let an earlier release do: a built-in name made a remote model."""
    conn.execute(
        "UPDATE embeddings.models SET provider = 'openai', dimensions = %s,"
        " endpoint = 'http://127.0.0.1:9/v1', remote_model = 'm', credential = NULL"
        " WHERE name = %s",
        (dimensions, name),
    )


def test_a_built_in_name_left_as_a_remote_model_is_not_watched_and_can_be_put_back(
    conn: Conn,
) -> None:
    """watch() made halfvec(64) for it, which the worker (running the built-in gte-small)
    never filled; register_model(name, dimensions) without a provider puts the built-in row
    back (it kept provider openai)."""
    shadow_built_in(conn)
    conn.execute("CREATE TABLE t2 (id int PRIMARY KEY, body text)")

    with pytest.raises(psycopg.errors.InvalidParameterValue, match="registered otherwise") as e:
        conn.execute("SELECT embeddings.watch('t2', 'body')")
    assert "provider => 'local'" in (e.value.diag.message_hint or "")

    conn.execute("SELECT embeddings.register_model('gte-small', 384)")
    assert row(conn, "gte-small") == ("local", 384, "mean", 512, "Supabase/gte-small", None)
    conn.execute("SELECT embeddings.watch('t2', 'body', backfill => false)")
    assert conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 't2'::regclass AND attname = 'embedding'"
    ).fetchone() == ("halfvec(384)",)


# --- unregister_model() -------------------------------------------------------------------------


def register(conn: Conn, name: str, dimensions: int = 8) -> None:
    conn.execute(
        "SELECT embeddings.register_model(%s, %s, 'openai', 'http://127.0.0.1:9/v1',"
        " credential => '')",
        (name, dimensions),
    )


def test_unregister_model_removes_a_mistaken_registration(conn: Conn) -> None:
    register(conn, "mistake")

    assert conn.execute("SELECT embeddings.unregister_model('mistake')").fetchone() == (True,)
    assert conn.execute("SELECT embeddings.unregister_model('mistake')").fetchone() == (False,)
    assert row(conn, "mistake") is None
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match='unknown model "mistake"'):
        conn.execute("SELECT embeddings.watch('docs', 'body', model => 'mistake')")


def test_unregister_model_refuses_a_model_in_use_changing_to_or_the_default(conn: Conn) -> None:
    register(conn, "used")
    register(conn, "next")
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'used', backfill => false)")

    with pytest.raises(
        psycopg.errors.ObjectInUse, match=r"model used is in use \(public.docs.embedding\)"
    ):
        conn.execute("SELECT embeddings.unregister_model('used')")

    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'next')")  # a change, in flight
    with pytest.raises(
        psycopg.errors.ObjectInUse,
        match=r"next is in use \(public.docs.embedding \(changing to it\)\)",
    ) as e:
        conn.execute("SELECT embeddings.unregister_model('next')")
    assert "cancel_change" in (e.value.diag.message_hint or "")

    conn.execute("SELECT embeddings.cancel_change('docs')")
    conn.execute("SELECT embeddings.set_default_model('next')")
    with pytest.raises(psycopg.errors.ObjectInUse, match="the database's default model") as e:
        conn.execute("SELECT embeddings.unregister_model('next')")
    assert "set_default_model" in (e.value.diag.message_hint or "")

    conn.execute("SELECT embeddings.set_default_model('gte-small')")
    assert conn.execute("SELECT embeddings.unregister_model('next')").fetchone() == (True,)
    assert row(conn, "used") is not None


def test_unregister_model_keeps_a_built_in_model(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is built in") as e:
        conn.execute("SELECT embeddings.unregister_model('bge-small-en-v1.5')")
    assert "register_model('bge-small-en-v1.5', 384, provider => 'local')" in (
        e.value.diag.message_hint or ""
    )
    assert row(conn, "bge-small-en-v1.5") is not None


def test_the_unknown_model_hint_says_how_to_register_a_local_model(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown model") as e:
        conn.execute("SELECT embeddings.watch('docs', 'body', model => 'my-own')")

    hint = e.value.diag.message_hint or ""
    assert "provider => 'local'" in hint and "INSERT" not in hint, hint


# --- the worker, `embed`, `model list` and doctor: one meaning per name -------------------------


def test_a_built_in_name_left_as_a_remote_model_is_the_built_in_model_everywhere(
    conn: Conn, dsn: str, minilm: str, run_once: Callable[..., Worker]
) -> None:
    """A table watched on the built-in MiniLM, then the name made a remote model of 64
    dimensions (by an earlier release's register_model()): the worker kept calling the remote
    endpoint for it while `embed` ran the built-in model and `model list` showed both. Now the
    name is the built-in model for all of them, and the row is named as ignored, with its fix."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, backfill => false)", (minilm,)
    )
    shadow_built_in(conn, minilm, 64)
    register(conn, "far-8")  # a remote model of its own name, listed as such
    conn.execute("INSERT INTO docs VALUES (1, 'hello there')")

    run_once()

    stored = conn.execute("SELECT embedding::text FROM docs WHERE id = 1").fetchone()
    assert stored is not None and stored[0] is not None
    env = {"DATABASE_URL": dsn, "EMBED_MODEL": ""}
    [vector] = cli_json("embed", "--model", minilm, "hello there", env=env)
    assert len(vector) == 384
    listed = run_cli("model", "list", env=env)
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert names.count(minilm) == 1, listed.stdout
    assert f"register_model('{minilm}', 384, provider => 'local')" in listed.stderr
    far = next(line.split() for line in listed.stdout.splitlines() if line.startswith("far-8"))
    assert far[1:3] == ["8", "-"], far  # a remote model's vectors come pooled
    doctor = run_cli("doctor", env=env)
    assert re.search(
        rf"^FAIL\s+model {minilm}'s registration: the registry holds {minilm} as a remote",
        doctor.stdout,
        re.MULTILINE,
    ), doctor.stdout
