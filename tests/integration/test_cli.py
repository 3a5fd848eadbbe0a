"""The CLI a newcomer types: which database, an unmigrated database, options anywhere, help that
says what each option does, `embed -`, hints that work as printed, status bars, doctor."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.jobs import dead_letters
from tests.support.process import run_cli
from worker import queries, schema
from worker.cli import parser as cli_parser

Conn = psycopg.Connection[Any]


@pytest.mark.parametrize("command", ["status", "failures"])
def test_an_unmigrated_database_says_to_migrate_and_names_it(empty_dsn: str, command: str) -> None:
    result = run_cli(command, "--database-url", empty_dsn)  # the option after the command

    assert result.returncode == 1
    name = psycopg.conninfo.conninfo_to_dict(empty_dsn)["dbname"]
    assert "does not exist" not in result.stderr
    assert "the embeddings schema is not installed in 127.0.0.1:" in result.stderr
    assert f"/{name}: run `DATABASE_URL=" in result.stderr
    assert " migrate`" in result.stderr
    assert "embed-worker: database 127.0.0.1:" in result.stderr  # which database, always


def test_without_database_url_it_says_it_uses_the_local_cluster(dsn: str) -> None:
    env = {k: "" for k in ("DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER")}
    result = run_cli("status", env={**env, "DEVDB_PORT": "1"})

    assert "database 127.0.0.1:1/embed (the local `make db` cluster" in result.stderr


def test_every_subcommand_help_describes_every_option() -> None:
    parser = cli_parser.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(action.choices, dict)
    subparsers: dict[str, argparse.ArgumentParser] = action.choices
    for name, sub in subparsers.items():
        for option in sub._actions:
            if option.dest in ("help", "model_command"):
                continue
            assert option.help, f"{name}: {option.dest} has no description"
    migrate_help = subparsers["migrate"].format_help()
    assert "Install the embeddings schema" in migrate_help
    # run: the routes it serves, and how /search authenticates and whose rights it searches with.
    run_help = " ".join(subparsers["run"].format_help().split())
    for said in ("POST /search", "EMBED_HTTP_TOKEN", "EMBED_SEARCH_DATABASE_URL", "row-level"):
        assert said in run_help, said
    search_help = subparsers["search"].format_help()
    for flag in ("--rrf-k", "--vector-weight", "--text-weight", "--depth"):
        assert flag in search_help


def test_migrate_waits_for_a_held_advisory_lock_only_until_lock_wait(conn: Conn, dsn: str) -> None:
    """Any login can take migrate's advisory lock (a key every session shares): `migrate` tries
    it and waits no longer than --lock-wait, then names who holds it; once free, it runs.
    (Before, it waited for the lock as long as that session held it.)"""
    with psycopg.connect(dsn, autocommit=True) as squatter:
        squatter.execute("SELECT pg_advisory_lock(%s)", (schema.MIGRATION_LOCK_KEY,))
        held = run_cli("migrate", "--lock-wait", "1", "--database-url", dsn)
        assert held.returncode != 0, held.stdout
        pid = squatter.info.backend_pid
        assert f"pid {pid}" in held.stderr and "advisory lock of migrate" in held.stderr
        assert "Traceback" not in held.stderr
    free = run_cli("migrate", "--database-url", dsn)
    assert free.returncode == 0, free.stderr
    assert "already at" in free.stdout
    refused = run_cli("migrate", "--lock-wait", "-1", "--database-url", dsn)
    assert refused.returncode != 0 and "--lock-wait" in refused.stderr


def test_embed_dash_reads_standard_input(monkeypatch: pytest.MonkeyPatch, minilm: str) -> None:
    result = run_cli("embed", "--model", minilm, "-", stdin="hello world\nsecond line\n")

    assert result.returncode == 0, result.stderr
    vectors = json.loads(result.stdout)
    assert len(vectors) == 2 and len(vectors[0]) == 384
    assert "loaded" not in result.stderr  # no model-load INFO line in a command's output


def test_search_gives_numeric_keys_exactly_in_json_and_in_its_table(
    conn: Conn, dsn: str, minilm: str
) -> None:
    """As embeddings.search() has them, as strings (docs/http.md): --json gave
    100000000000000000000.25 as 1e+20 and 1.50 as 1.5, the table the same."""
    conn.execute("CREATE TABLE tk (d date, n numeric, body text, PRIMARY KEY (d, n))")
    conn.execute(
        "INSERT INTO tk VALUES ('2024-01-02', 100000000000000000000.25, 'cats sleep'),"
        " ('2024-01-03', 1.50, 'stocks fell')"
    )
    conn.execute("SELECT embeddings.watch('tk', 'body', model => %s)", (minilm,))
    assert run_cli("run", "--once", "--database-url", dsn).returncode == 0
    result = run_cli("search", "tk", "cats", "--json", "--database-url", dsn)
    assert result.returncode == 0, result.stderr
    assert [r["key"] for r in json.loads(result.stdout)] == [
        ["2024-01-02", "100000000000000000000.25"],
        ["2024-01-03", "1.50"],
    ]
    table = run_cli("search", "tk", "cats", "--database-url", dsn).stdout
    assert "100000000000000000000.25" in table and "'1.50'" in table


def test_search_prints_no_model_load_line_and_hints_work_as_printed(
    conn: Conn, dsn: str, minilm: str
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'cats sleep'), (2, 'stocks fell')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    assert run_cli("run", "--once", "--database-url", dsn).returncode == 0

    result = run_cli("search", "docs", "kittens napping", "-k", "1", "--database-url", dsn)
    assert result.returncode == 0, result.stderr
    assert "cats sleep" in result.stdout
    assert "INFO" not in result.stderr
    # Whose rights and row-level security made the answer (docs/cli.md).
    assert f"searching as role {conn.info.user}" in result.stderr
    # Keys typed as in the table; a filter that nothing passes says so (no empty table).
    result = run_cli("search", "docs", "cats", "--json", "--database-url", dsn)
    assert [r["key"] for r in json.loads(result.stdout)] == [1, 2]
    result = run_cli("search", "docs", "cats", "--filter", '{"id": 3}', "--database-url", dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no rows of docs match the filter")
    result = run_cli("search", "docs", "cats", "--filter", '{"nope": 3}', "--database-url", dsn)
    assert result.returncode != 0 and "has no column nope" in result.stderr
    # One line that says what is wrong, not the server's CONTEXT of our functions (issue 37).
    assert "PL/pgSQL function" not in result.stderr and "CONTEXT" not in result.stderr
    assert len(result.stderr) < 600, result.stderr

    dead_letters(conn, [2])
    listed = run_cli("failures", "--database-url", dsn)
    hint = listed.stdout.strip().splitlines()[-1].split("re-queue with: ", 1)[1]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PATH"] = "/usr/bin:/bin"  # no venv on PATH: the hint must name its executable
    retried = subprocess.run(hint, shell=True, capture_output=True, text=True, env=env)
    assert retried.returncode == 0, retried.stderr
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_search_as_a_read_only_role(conn: Conn, dsn: str, minilm: str) -> None:
    """`search` as a role that may read the table and nothing of ours (an application's, as
    POST /search's role is): the registry of remote models, which it may not read, is not needed
    to search a table of a local model. With the worker's environment, it is the role the
    command searches as, as POST /search does; `--database-url` names another."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'cats sleep'), (2, 'stocks fell')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    assert run_cli("run", "--once", "--database-url", dsn).returncode == 0
    reader = f"reader_{uuid.uuid4().hex[:10]}"
    worker = f"worker_{uuid.uuid4().hex[:10]}"  # a worker's role: no right on the table
    conn.execute(f"CREATE ROLE {reader} LOGIN")
    conn.execute(f"CREATE ROLE {worker} LOGIN")
    conn.execute(f"GRANT SELECT ON docs TO {reader}")
    as_reader = psycopg.conninfo.make_conninfo(dsn, user=reader)
    as_worker = psycopg.conninfo.make_conninfo(dsn, user=worker)
    asked = ("search", "docs", "kittens napping", "-k", "1")
    try:
        result = run_cli(*asked, "--database-url", as_reader)
        assert result.returncode == 0, result.stderr
        assert "cats sleep" in result.stdout

        # The worker's environment: the command searches as POST /search does, as the role
        # EMBED_SEARCH_DATABASE_URL names, not as DATABASE_URL's (which may not read docs).
        env = {"DATABASE_URL": as_worker, "EMBED_SEARCH_DATABASE_URL": as_reader}
        alone = run_cli(*asked, env={"DATABASE_URL": as_worker})
        assert alone.returncode == 2 and "permission denied for table docs" in alone.stderr
        result = run_cli(*asked, env=env)
        assert result.returncode == 0, result.stderr
        assert "cats sleep" in result.stdout
        assert "as EMBED_SEARCH_DATABASE_URL's role" in result.stderr
        # A role named on the command line is the one searched as, whatever the environment.
        named = run_cli(*asked, "--database-url", as_worker, env=env)
        assert named.returncode == 2 and "permission denied" in named.stderr, named.stderr
    finally:
        for role in (reader, worker):
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_tenants_names_and_content_are_shown_not_obeyed(
    conn: Conn, dsn: str, minilm: str
) -> None:
    """A table named, and content written, with what a terminal acts on (an escape sequence that
    clears the screen, one that sets the window's title, a right-to-left override): `status`,
    `search` and `doctor` print them as escapes, every line of their output printable."""
    name = "notes\x1b[2J\u202e"
    quoted = '"' + name + '"'
    conn.execute(f"CREATE TABLE {quoted} (id int PRIMARY KEY, body text)")
    conn.execute(
        f"INSERT INTO {quoted} VALUES (1, 'cats \x1b]0;owned\x07 sleep'), (2, 'stocks fell')"
    )
    conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (quoted, minilm))
    assert run_cli("run", "--once", "--database-url", dsn).returncode == 0
    reader = f"reader_{uuid.uuid4().hex[:10]}"  # POST /search's role, which may not read it
    conn.execute(f"CREATE ROLE {reader} LOGIN")
    as_reader = {"EMBED_SEARCH_DATABASE_URL": psycopg.conninfo.make_conninfo(dsn, user=reader)}
    try:
        printed = {
            "status": run_cli("status", "--database-url", dsn),
            "search": run_cli("search", quoted, "kittens", "-k", "1", "--database-url", dsn),
            "doctor": run_cli("doctor", "--database-url", dsn, env=as_reader),
        }
        for command, result in printed.items():
            assert result.returncode in (0, 1), (command, result.stderr)
            lines = (result.stdout + result.stderr).splitlines()
            assert all(line.isprintable() for line in lines), (command, lines)
        assert "notes\\x1b[2J\\u202e" in printed["status"].stdout
        assert "cats \\x1b]0;owned\\x07 sleep" in printed["search"].stdout
        # doctor's fix names the table with Unicode escapes: pasted, it grants what it says.
        fix = next(
            line.split("fix: as the tables' owner: ", 1)[1]
            for line in printed["doctor"].stdout.splitlines()
            if "fix: as the tables' owner: GRANT" in line
        )
        assert 'U&"notes\\001b[2J\\202e"' in fix
        conn.execute(fix.encode())
        granted = conn.execute(
            "SELECT has_table_privilege(%s, %s, 'SELECT')", (reader, quoted)
        ).fetchone()
        assert granted == (True,)
    finally:
        conn.execute(f"DROP OWNED BY {reader}")
        conn.execute(f"DROP ROLE {reader}")


def test_search_mode_hybrid_and_its_tuning(conn: Conn, dsn: str, minilm: str) -> None:
    """`search --mode hybrid`: k results with the hybrid score and both ranks, keys typed as in
    the table (text here); --rrf-k, --vector-weight, --text-weight and --depth reach the
    fusion, and bad values are refused naming the flag."""
    conn.execute("CREATE TABLE notes (id text PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO notes VALUES ('a', 'shutil.rmtree deletes a directory tree'),"
        " ('b', 'remove a folder with everything inside'), ('c', 'cats sleep all day'),"
        " ('d', 'stocks fell sharply on Monday')"
    )
    conn.execute(
        "SELECT embeddings.watch('notes', 'body', model => %s, fts => 'english')", (minilm,)
    )
    assert run_cli("run", "--once", "--database-url", dsn).returncode == 0

    hybrid = ("search", "notes", "rmtree", "--mode", "hybrid", "--json", "--database-url", dsn)
    convex = run_cli(*hybrid, "-k", "3")  # the default fusion: scores, on scales of their own
    assert convex.returncode == 0, convex.stderr
    scores = [h["score"] for h in json.loads(convex.stdout)]
    assert json.loads(convex.stdout)[0]["key"] == "a" and scores == sorted(scores, reverse=True)
    # The table shows the score it is ordered by (it showed only the similarity, which a hybrid
    # ranking does not follow: the reader saw rows out of order).
    table = run_cli(*(a for a in hybrid if a != "--json"), "-k", "3")
    assert table.returncode == 0, table.stderr
    header, _, *lines = table.stdout.splitlines()
    assert header.split()[:3] == ["score", "similarity", "key"], header
    assert [float(line.split()[0]) for line in lines] == pytest.approx(scores, abs=1e-4)
    args = (*hybrid, "--fusion", "rrf")
    result = run_cli(*args, "-k", "3")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 3 and hits[0]["key"] == "a"
    assert all(isinstance(h["key"], str) for h in hits)
    for h in hits:  # scored by reciprocal ranks: weight / (60 + rank) per ranking holding it
        parts = [w / (60 + r) for w, r in ((1, h["vector_rank"]), (2, h["text_rank"])) if r]
        assert h["score"] == pytest.approx(sum(parts))
        assert h["similarity"] == pytest.approx(1 - h["distance"])
    assert hits[0]["text_rank"] == 1 and hits[1]["text_rank"] is None
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    tuned = run_cli(*args, "-k", "2", "--rrf-k", "0", "--text-weight", "0.5", "--depth", "2")
    assert tuned.returncode == 0, tuned.stderr
    for h in json.loads(tuned.stdout):
        assert h["vector_rank"] <= 2
        parts = [1 / h["vector_rank"]] + ([0.5 / h["text_rank"]] if h["text_rank"] else [])
        assert h["score"] == pytest.approx(sum(parts))

    for bad, message in [
        (("--depth", "0"), "--depth must be an integer from 1 to 1000"),
        (("--rrf-k", "-1"), "--rrf-k must be a number of at least 0"),
        (("--vector-weight", "0", "--text-weight", "0"), "cannot both be 0"),
    ]:
        refused = run_cli(*args, *bad)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    # The default convex fusion has no rank constant: --rrf-k would be ignored (0.3.0 did).
    refused = run_cli(*hybrid, "--rrf-k", "10")
    assert refused.returncode == 2
    assert "--rrf-k is for --fusion 'rrf': the convex one has no" in refused.stderr
    vector = run_cli(
        "search", "notes", "rmtree", "--mode", "vector", "--depth", "5", "--database-url", dsn
    )
    assert vector.returncode != 0 and "--depth: these tune hybrid search" in vector.stderr


def test_status_shows_progress_and_eta_for_pending_work(conn: Conn, dsn: str, minilm: str) -> None:
    # 4 of 10 rows embedded before watch(), which queues the other 6: 40% done.
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec(384))")
    conn.execute("INSERT INTO docs SELECT i, 'text ' || i FROM generate_series(1, 10) i")
    conn.execute("UPDATE docs SET embedding = array_fill(0.1, ARRAY[384])::halfvec WHERE id <= 4")
    target = stores.watch(conn, "row", minilm)
    conn.execute(
        "INSERT INTO embeddings.throughput (target_id, minute, rows)"
        " VALUES (%s, date_trunc('minute', now()), 60)",
        (target,),
    )

    result = run_cli("status", "--database-url", dsn)

    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("public.docs.embedding"))
    assert "[########............]  40%" in line
    assert re.search(r"\d+\.\d s\s*$", line)  # an ETA from the recent rate

    # The 4 rows change: their old vectors stay until re-embedded, but jobs wait for them, so
    # they are not done (a held or changed target never shows a full bar with rows pending).
    conn.execute("UPDATE docs SET body = body || ' (edited)' WHERE id <= 4")
    again = run_cli("status", "--database-url", dsn)
    line = next(x for x in again.stdout.splitlines() if x.startswith("public.docs.embedding"))
    assert "[....................]   0%" in line, line


def test_status_watch_refreshes_in_place(conn: Conn, dsn: str) -> None:
    primary, replica = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "status", "--watch", "0.2", "--database-url", dsn],
        stdout=replica,
        stderr=subprocess.DEVNULL,
    )
    os.close(replica)
    seen = b""
    deadline = time.monotonic() + 30
    while seen.count(b"\x1b[H\x1b[J") < 2 and time.monotonic() < deadline:
        if select.select([primary], [], [], 0.5)[0]:
            seen += os.read(primary, 65536)
    proc.send_signal(signal.SIGINT)
    # Read on until it exits: a child whose last frame cannot be written (nobody reading the
    # terminal) would wait with it; and a loaded machine may take long to deliver the signal.
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([primary], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):  # EIO once the child has closed its side
                seen += os.read(primary, 65536)
    assert proc.wait(timeout=1) == 0
    os.close(primary)
    assert seen.count(b"\x1b[H\x1b[J") >= 2
    assert b"no watched tables" in seen


def test_status_watch_of_one_table_as_json_is_a_line_of_json_a_refresh(
    conn: Conn, dsn: str
) -> None:
    """`status TABLE --watch --json`: one JSON document a line each refresh, of that table
    alone (it printed the human table, the frames and their headers, and after Ctrl-C the
    table again)."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 384, 512, 'mean')"
    )
    for table in ("docs", "other"):
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        conn.execute(f"SELECT embeddings.watch('{table}', 'body', model => 'absent-model')")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "status", "docs", "--watch", "0.2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DATABASE_URL": dsn},
        text=True,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]  # two refreshes
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    for line in lines + rest.splitlines():
        document = json.loads(line)
        assert [r["target"] for r in document] == ["public.docs.embedding"], line


def test_doctor_names_each_problem_with_its_fix(conn: Conn, dsn: str) -> None:
    stores.watch_absent_model(conn)
    conn.execute("ALTER TABLE docs ALTER COLUMN embedding TYPE halfvec(768)")
    dead_letters(conn, [1])
    conn.execute(  # watch()'s jobs wait on the backfill lane
        "UPDATE pgmq.q_embedding_jobs_backfill SET enqueued_at = now() - interval '1 hour'"
    )
    conn.execute("CREATE ROLE doctor_probe LOGIN")

    result = run_cli("doctor", "--database-url", dsn)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "FAIL  model absent-model" in out, result.stderr
    assert "FAIL  dimensions public.docs.embedding: the column holds 768" in out
    assert "FAIL  queue public.docs.embedding: 1 job(s) pending, the oldest for 60" in out
    assert "FAIL  dead letters public.docs.embedding" in out
    assert "failures public.docs --retry" in out  # that table's alone

    probe = psycopg.conninfo.make_conninfo(dsn, user="doctor_probe")
    bare = run_cli("doctor", "--database-url", probe)  # no USAGE on pgmq: a report all the same
    assert "ok    schema: the embeddings schema is installed" in bare.stdout, bare.stderr
    assert "FAIL  grants public.docs.embedding: role doctor_probe lacks" in bare.stdout
    assert "SELECT embeddings.grant_worker('doctor_probe');" in bare.stdout
    conn.execute("GRANT USAGE ON SCHEMA embeddings, pgmq TO doctor_probe")
    denied = run_cli("doctor", "--database-url", probe)
    assert "FAIL  grants public.docs.embedding: role doctor_probe lacks EXECUTE" in denied.stdout
    assert "SELECT embeddings.grant_worker('doctor_probe');" in denied.stdout
    conn.execute("DROP OWNED BY doctor_probe")
    conn.execute("DROP ROLE doctor_probe")


def test_doctor_reads_every_target_s_functions_in_one_pass(conn: Conn) -> None:
    """A pass over our schema's functions per target (a regular expression per function per
    target: quadratic) took doctor 40 s at 1,000 watched tables."""
    for table in ("a", "b", "c"):
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        stores.watch_with(conn, table, model="all-MiniLM-L6-v2")
    explained = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {queries.get('target_grants')}")
    plan = explained.fetchone()
    assert plan is not None

    def scans(node: dict[str, Any]) -> list[int]:
        here = [node["Actual Loops"]] if node.get("Relation Name") == "pg_proc" else []
        return here + [n for child in node.get("Plans", []) for n in scans(child)]

    assert scans(plan[0][0]["Plan"]) == [1]
    rows = conn.execute(queries.get("target_grants")).fetchall()
    assert [can_run for _, _, _, can_run, _, _ in rows] == [True, True, True]


def test_doctor_does_not_ask_for_grants_on_functions_a_target_s_problem_dropped(
    conn: Conn, dsn: str
) -> None:
    """With its content column dropped a target's functions go (its problem is reported): doctor
    asked the superuser running it to grant_worker() itself EXECUTE on functions no longer there."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    stores.watch_with(conn, "docs", model="all-MiniLM-L6-v2")
    conn.execute("ALTER TABLE docs DROP COLUMN body")

    result = run_cli("doctor", "--database-url", dsn)
    assert "its content column body was dropped" in result.stdout, result.stderr
    assert "grants public.docs.embedding" not in result.stdout
    assert "grant_worker" not in result.stdout


def test_doctor_on_an_empty_database_asks_only_for_migrate(empty_dsn: str) -> None:
    """The server offers pgvector and pgmq: `migrate` creates both, so that is the one fix."""
    result = run_cli("doctor", "--database-url", empty_dsn)

    assert result.returncode == 1
    out = result.stdout
    # (a warning when the server's pgvector is older than 0.8.3: its HNSW vacuum race)
    vector = re.search(
        r"(ok  |warn)  pgvector: version [\d.]+ available on the server; `embed-worker migrate`",
        out,
    )
    assert vector is not None, out
    assert re.search(
        r"ok    pgmq: version [\d.]+ available on the server; `embed-worker migrate`", out
    )
    assert "FAIL  schema: the embeddings schema is not installed" in out
    assert "install pgvector" not in out
    assert f"\n1 problem(s), {int(vector.group(1) == 'warn')} warning(s)" in out


def test_an_unknown_embed_model_is_a_usage_error_naming_the_variable(dsn: str) -> None:
    """EMBED_MODEL naming no model (not in the catalog, not registered, no such directory) is
    a configuration error: exit 2, the variable named, the closest known name offered."""
    result = run_cli(
        "run",
        "--once",
        "--no-progress",
        env={"DATABASE_URL": dsn, "EMBED_MODEL": "all-MiniLM-L6v2"},
    )

    assert result.returncode == 2, result.stderr
    assert "EMBED_MODEL=all-MiniLM-L6v2" in result.stderr
    assert "did you mean all-MiniLM-L6-v2?" in result.stderr


def test_failures_of_one_table_or_some_ids_are_listed_and_retried_alone(
    conn: Conn, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator fixes one table's cause, or one row's, and re-queues those dead letters only;
    a long list is shown a page at a time, saying how many more there are."""
    from worker.cli import main as cli

    for table in ("docs", "notes"):
        stores.texts_table(conn, {}, table=table)
        conn.execute(f"SELECT embeddings.watch('{table}', 'body')")
    conn.execute(
        "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message, attempts,"
        " last_error) SELECT t.id, embeddings_internal.target_name(t), to_jsonb(k),"
        " 'embedding_jobs', jsonb_build_object('target', t.id, 'keys', jsonb_build_array(k)), 5,"
        " 'boom ' || k FROM embeddings.targets t, generate_series(1, 3) AS k ORDER BY t.id, k"
    )

    def failures(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["failures", *argv, "--database-url", dsn])
        out, err = capsys.readouterr()
        return code, out, err

    def left() -> list[tuple[str, int]]:
        return conn.execute(
            "SELECT target, row_key::int FROM embeddings.failures ORDER BY id"
        ).fetchall()

    code, out, _ = failures("notes", "--json")
    assert code == 0 and [(f["target"], f["row_key"]) for f in json.loads(out)] == [
        ("public.notes.embedding", k) for k in (1, 2, 3)
    ]
    code, out, _ = failures("--limit", "2")
    assert code == 0 and "6 dead-lettered, the first 2 shown (--limit)" in out
    assert len(re.findall(r"public\.\w+\.embedding", out)) == 2
    assert out.strip().endswith(" failures --limit 2 --retry"), out  # re-queues what it showed
    code, out, _ = failures("docs")
    assert out.strip().endswith(" failures docs --retry"), out

    first_notes = conn.execute("SELECT min(id) FROM embeddings.failures WHERE target ~ 'notes'")
    (one,) = first_notes.fetchone() or (0,)
    code, _, err = failures("--id", str(one), "--retry")
    assert code == 0 and "re-queued 1 dead-lettered job(s)" in err
    assert ("public.notes.embedding", 1) not in left() and len(left()) == 5
    code, _, err = failures("docs", "--retry")
    assert code == 0 and "re-queued 3 dead-lettered job(s)" in err
    assert left() == [("public.notes.embedding", 2), ("public.notes.embedding", 3)]
    queued = conn.execute(
        "SELECT t.source::text, (q.message->'keys'->>0)::int FROM pgmq.q_embedding_jobs_backfill q"
        " JOIN embeddings.targets t ON t.id = (q.message->>'target')::int ORDER BY 1, 2"
    ).fetchall()
    assert queued == [("docs", 1), ("docs", 2), ("docs", 3), ("notes", 1)]

    code, _, err = failures("nosuch", "--retry")
    assert code == 2 and "no table nosuch" in err and len(left()) == 2
    conn.execute("CREATE TABLE plain (id int)")
    code, _, err = failures("plain")
    assert code == 2 and "public.plain is not watched: it has no dead letters" in err
    # An id that names no dead letter (of the table given) is said, and nothing is re-queued:
    # it said "re-queued 0", exit 0, and re-queued the ids that were there.
    (two,) = conn.execute("SELECT min(id) FROM embeddings.failures").fetchone() or (0,)
    for argv, unknown in (
        (("--id", "0"), "no dead letter with id 0"),
        (("--id", str(two), "--id", "99999", "--id", "0"), "no dead letter with id 99999, 0"),
        (("docs", "--id", str(two)), f"no dead letter with id {two} of docs"),
    ):
        code, _, err = failures(*argv, "--retry")
        assert code == 2 and f"{unknown}: nothing was re-queued" in err, err
        assert len(left()) == 2
        # Listed, such an id said "no dead-lettered jobs", exit 0, as if that row had none.
        code, out, err = failures(*argv)
        assert code == 2 and f"{unknown} (`failures` lists them)" in err and not out, err
    code, _, err = failures("--limit", "1", "--retry")  # what `failures --limit 1` lists, no more
    assert code == 0 and "re-queued 1 dead-lettered job(s)" in err
    assert left() == [("public.notes.embedding", 3)]
