"""A search naming a target's chunk (or side) table instead of the table it embeds: the answer
names the target and the table to search (a QA pass: POST /search of files_chunks answered
"files_chunks is not watched: SELECT embeddings.watch('files_chunks', 'content_column');",
which watch() refuses, as the chunk table of target public.files.embedding)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from worker.cli import main as cli
from worker.config import Settings
from worker.http.server import serve
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

CHUNKS = (
    "files_chunks is the chunk table of target public.files.embedding: search files instead,"
    " the table whose rows its chunks embed"
)


@pytest.fixture
def files(conn: Conn, minilm: str) -> None:
    conn.execute("CREATE TABLE files (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO files VALUES (1, 'A refund takes fourteen days.')")
    conn.execute(
        "SELECT embeddings.watch('files', 'body', model => %s, chunk_tokens => 64)", (minilm,)
    )
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('notes', 'body', model => %s, store => 'side',"
        " side_table => 'note_vectors')",
        (minilm,),
    )


def test_http_names_the_target_of_a_chunk_table_and_the_table_to_search(
    files: None, settings: Settings, run_once: Callable[..., Worker]
) -> None:
    server = serve(run_once(), settings.with_overrides(http_port=0))
    try:
        body = json.dumps({"table": "files_chunks", "query": "refund", "k": 1}).encode()
        asked = urllib.request.Request(
            f"{server.url}/search", body, {"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(asked, timeout=60)
        assert info.value.code == 404
        assert json.load(info.value)["error"] == CHUNKS
    finally:
        server.shutdown()


def test_the_command_line_names_them_too(
    files: None,
    settings: Settings,
    model_path: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", settings.dsn)
    monkeypatch.setenv("EMBED_MODEL_PATH", model_path)
    assert cli.main(["search", "files_chunks", "refund"]) != 0
    assert CHUNKS in capsys.readouterr().err
    assert cli.main(["search", "note_vectors", "refund"]) != 0
    assert (
        "note_vectors is the side table of target public.notes.embedding: search notes instead,"
        " the table whose rows its vectors embed"
    ) in capsys.readouterr().err


def test_status_and_failures_of_a_chunk_table_are_its_target_s_and_plan_names_the_table(
    files: None,
    conn: Conn,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`failures files_chunks` said "files_chunks is not watched: it has no dead letters" and
    `status files_chunks` "search files instead"; `plan files_chunks` offered to plan watching
    it (watch() refuses it). A chunk table's rows are its target's: its status and dead letters
    are listed, saying whose; plan names the table to plan."""
    monkeypatch.setenv("DATABASE_URL", settings.dsn)
    conn.execute(
        "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message, attempts,"
        " last_error) SELECT t.id, embeddings_internal.target_name(t), to_jsonb(1),"
        " 'embedding_jobs', jsonb_build_object('target', t.id, 'keys', jsonb_build_array(1)), 5,"
        " 'boom' FROM embeddings.targets t ORDER BY t.id"
    )
    whose = "files_chunks is the chunk table of target public.files.embedding: "
    assert cli.main(["failures", "files_chunks", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [f["target"] for f in json.loads(out)] == ["public.files.embedding"]
    assert whose + "its dead letters are those of files, listed here" in err
    assert cli.main(["failures", "note_vectors", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [f["target"] for f in json.loads(out)] == ["public.notes.embedding"]
    assert "note_vectors is the side table of target public.notes.embedding: " in err
    assert cli.main(["status", "files_chunks", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [r["target"] for r in json.loads(out)] == ["public.files.embedding"]
    assert whose + "its status is that target's, shown here" in err
    assert cli.main(["plan", "files_chunks"]) == 2
    assert CHUNKS.replace("search files", "plan files") in capsys.readouterr().err


def test_sql_search_and_match_chunks_name_them_too(files: None, conn: Conn) -> None:
    query = "[" + ",".join(["0.1"] * 384) + "]"
    with pytest.raises(psycopg.errors.UndefinedObject) as info:
        conn.execute("SELECT * FROM embeddings.search('files_chunks', %s::halfvec, 3)", (query,))
    error = info.value.diag
    assert error.message_primary == (
        "files_chunks is the chunk table of target public.files.embedding: search files"
    )
    assert error.message_hint is not None and error.message_hint.startswith("Name files,")
    with pytest.raises(psycopg.errors.UndefinedObject) as info:
        conn.execute(
            "SELECT * FROM embeddings.match_chunks('files_chunks', %s::halfvec, 3)", (query,)
        )
    assert info.value.diag.message_primary == (
        "files_chunks is the chunk table of target public.files.embedding: pass files"
    )
