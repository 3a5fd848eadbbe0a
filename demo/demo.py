"""`make demo`: a watched table, ~50 real paragraphs, the worker, two semantic searches.

The paragraphs are the opening paragraphs of Python standard library modules' docstrings: real
text, written by others, present on every machine that runs this. Everything lives in the
schema `embed_demo`, recreated on each run; nothing else in the database is touched.

The model (EMBED_MODEL, else the database's default model: gte-small unless changed) is
downloaded on first use. The demo judges by the
table, not by its own worker's count: another worker on the same database may embed the rows.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import time
from pathlib import Path

import psycopg
from pgvector import HalfVector

from worker import db, exceptions, logs
from worker.cli import hints
from worker.config import Settings
from worker.models import download, files
from worker.pipeline.targets import database_default_model
from worker.process.runner import Worker

MODULES = [
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "bz2",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "colorsys",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http",
    "imaplib",
    "inspect",
    "ipaddress",
    "json",
    "keyword",
    "linecache",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "mimetypes",
    "netrc",
    "numbers",
    "operator",
    "optparse",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "quopri",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "typing",
    "unittest",
    "urllib",
    "uuid",
    "wave",
    "weakref",
    "zipfile",
    "zlib",
]
QUERIES = ("compressing and decompressing data files", "running work in parallel threads")
PARAGRAPHS = 50
WAIT_SECONDS = 120.0  # for rows that another worker on this database leased


def paragraphs() -> list[tuple[str, str]]:
    found = []
    for name in MODULES:
        try:
            doc = importlib.import_module(name).__doc__ or ""
        except ImportError:
            continue
        first = " ".join(doc.strip().split("\n\n")[0].split())
        if len(first) >= 40:
            found.append((name, first))
        if len(found) == PARAGRAPHS:
            break
    return found


def main() -> int:
    settings = Settings.from_env()
    logs.configure(settings.log_format, "WARNING")
    dsn = settings.dsn
    with db.connect(dsn) as conn:  # EMBED_MODEL, else the database's default model
        database_default = database_default_model(conn)
        model = settings.default_model(database_default)
        if database_default != model:
            # One notion of the default: the README's next step, watch() with no model, must
            # get the model this machine has, not gte-small that it may not have.
            conn.execute("SELECT embeddings.set_default_model(%s)", (model,))
            print(
                f"the database's default model is now {model} (EMBED_MODEL), as watch() uses"
                f" when no model is named: SELECT embeddings.set_default_model('{model}')"
            )
    # First: the model (a download on the first run; progress bars on a terminal).
    found = _fetch(model, settings)
    print(f"model {model}: in {found}")
    texts = paragraphs()
    with db.connect(dsn) as conn:
        conn.execute("DROP SCHEMA IF EXISTS embed_demo CASCADE")
        conn.execute("CREATE SCHEMA embed_demo")
        conn.execute(
            "CREATE TABLE embed_demo.documents ("
            " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, module text NOT NULL, body text)"
        )
        conn.execute(
            "SELECT embeddings.watch('embed_demo.documents', 'body', model => %s)", (model,)
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO embed_demo.documents (module, body) VALUES (%s, %s)", texts
            )
    print(f"inserted {len(texts)} paragraphs into embed_demo.documents (model {model})")

    started = time.perf_counter()
    worker = Worker(settings, once=True, progress=False, handle_signals=False)
    if worker.run() != 0:
        return 1
    embedded, total = _wait_for_the_table(dsn)
    print(f"worker embedded {embedded} of {total} rows in {time.perf_counter() - started:.1f} s\n")
    if embedded != total:
        status = hints.command("status", dsn)
        failures = hints.command("failures", dsn)
        print(f"not every row was embedded: see `{status}` and `{failures}`")
        return 1

    model_embedder = worker.embedders.get(model)
    # The query an application sends, in an application's session: its search path finds
    # pgvector's <=> (the worker's own sessions search pg_catalog only).
    with psycopg.connect(dsn, autocommit=True) as conn:
        db.register_vector_types(conn)
        for query in QUERIES:
            vector = model_embedder.embed([query])[0]
            rows = conn.execute(
                "SELECT module, body, 1 - (embedding <=> %s) FROM embed_demo.documents"
                " ORDER BY embedding <=> %s LIMIT 3",
                (HalfVector(vector), HalfVector(vector)),
            ).fetchall()
            print(f"search: {query!r}")
            for module, body, similarity in rows:
                line = textwrap.shorten(body, 70)
                print(f"  {similarity:.3f}  {module:<20} {line}")
            print()
    print("try your own question (copy and paste):")
    search = "search embed_demo.documents " + repr("your question")
    print(f"  {hints.command(search, dsn, _model_settings(found, settings))}")
    return 0


def _fetch(model: str, settings: Settings) -> Path:
    """Where the model is, downloading it first if needed."""
    location = settings.model_location
    try:
        found = location.locate(model)
    except exceptions.ModelNotFound:
        print(f"model {model}: not on this machine yet; downloading it (first run only)")
        found = download.ensure(
            model, variant=settings.model_variant, location=location, policy=settings.downloads
        )
    return found


def _model_settings(found: Path, settings: Settings) -> dict[str, str]:
    """What a pasted `search` needs to load the model this run used, from a shell that has
    none of this run's settings: the directory it was found in, unless that is the default
    download cache (searched anyway), and the variant, unless the default."""
    out = {}
    if found.parent.resolve() != Path(files.DEFAULT_CACHE_DIR).expanduser().resolve():
        out["EMBED_MODEL_PATH"] = str(found.parent.resolve())
    if settings.model_variant != "fp32":
        out["EMBED_MODEL_VARIANT"] = settings.model_variant
    return out


def _wait_for_the_table(dsn: str) -> tuple[int, int]:
    """(embedded, total) rows once no demo job is left, or when WAIT_SECONDS are over. Our
    worker's run may end while another worker still holds some of the demo's jobs."""
    deadline = time.monotonic() + WAIT_SECONDS
    with db.connect(dsn) as conn:
        while True:
            row = conn.execute(
                "SELECT count(embedding), count(*) FILTER (WHERE body ~ '[^[:space:]]'),"
                " (SELECT pending_jobs FROM embeddings.status"
                "   WHERE target = 'embed_demo.documents.embedding')"
                " FROM embed_demo.documents"
            ).fetchone()
            assert row is not None
            embedded, total, pending = row
            if embedded == total or not pending or time.monotonic() > deadline:
                return embedded, total
            time.sleep(0.2)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except exceptions.EmbedWorkerError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        sys.exit(1)
