"""Documents as chunked targets (issue 39, docs/documents.md): a bytea column of PDF, DOCX, HTML,
Markdown and text files, or a text column with format => ..., extracted by the worker, chunked
by section with a context header in front of each chunk, searchable with each chunk's heading
path and page; with the real all-MiniLM-L6-v2, real files made in the test and a real
database."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.support.documents import docx_bytes, encrypted, pdf_bytes
from tests.support.jobs import clear_queue, messages, queued_keys
from tests.support.models import shared_models_dir
from tests.support.process import run_cli
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.models.onnx import load_tokenizer
from worker.pipeline.documents.extraction import extract
from worker.pipeline.documents.headers import HeaderTemplate
from worker.pipeline.documents.splitting import DocumentSplitter
from worker.process.runner import Worker
from worker.retrieval import search
from worker.retrieval.request import SearchRequest

Conn = psycopg.Connection[Any]

MARKDOWN = """# Help centre

Welcome to the help centre of the shop.

## Refunds

It takes 14 days.

## Shipping

Parcels leave the warehouse within two working days.
"""

HTML = """<!DOCTYPE html><html><head><title>Staff handbook</title>
<script>var ignored = 1;</script></head><body>
<h1>Holidays</h1><p>Every employee has 25 days a year.</p>
<h2>Carrying over</h2><p>At most five days move to the next year.</p>
</body></html>"""

# Each page longer than two chunks: some chunks start on page 2.
PDF_PAGES = [
    ["Installation guide"]
    + [f"Step {n}: unpack the device, check its cable and plug it in." for n in range(10)],
    ["Maintenance", "Clean the filter every month with warm water."]
    + [f"Rule {n}: keep the vents free of dust and the lid closed." for n in range(10)],
]

DOCX_BLOCKS = [
    ("Heading 1", "Security policy"),
    ("Normal", "Passwords are rotated every ninety days."),
    ("Heading 2", "Laptops"),
    ("Normal", "Disks are encrypted before a laptop leaves the office."),
]


@pytest.fixture
def tokenizer(minilm: str) -> Any:
    return load_tokenizer(shared_models_dir() / minilm / "tokenizer.json", max_tokens=None)


@pytest.fixture
def files(conn: Conn, minilm: str) -> Iterator[dict[int, bytes]]:
    """A table of files of every format in a bytea column, watched in chunks of 64 tokens."""
    conn.execute("CREATE TABLE files (id bigint PRIMARY KEY, name text, body bytea)")
    stored = {
        1: MARKDOWN.encode(),
        2: HTML.encode(),
        3: pdf_bytes(PDF_PAGES, title="Heater manual"),
        4: docx_bytes(DOCX_BLOCKS, title="IT rules"),
        5: b"Plain notes without any heading at all.",
    }
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO files VALUES (%s, %s, %s)",
            [(k, f"file {k}", v) for k, v in stored.items()],
        )
    conn.execute(
        "SELECT embeddings.watch('files', 'body', model => %s, chunk_tokens => 64, chunk_overlap => 0)",
        (minilm,),
    )
    yield stored


def chunk_rows(conn: Conn, table: str = "files_chunks") -> list[dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            f"SELECT id, seq, chunk, chunk_hash, start_offset, end_offset, headings, page,"
            f" embedding::real[] AS embedding FROM {table} ORDER BY id, seq"
        ).fetchall()


def expected_chunks(
    tokenizer: Any,
    content: bytes | str,
    template: HeaderTemplate | None = None,
    **extract_args: Any,
) -> tuple[str, list[Any]]:
    document = extract(content, max_bytes=0, **extract_args)
    return document.text, DocumentSplitter(tokenizer, 64, 0, template).split(document)


def test_each_format_in_a_bytea_column_is_extracted_and_chunked_by_section(
    conn: Conn,
    files: dict[int, bytes],
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
    minilm: str,
    tokenizer: Any,
) -> None:
    assert conn.execute(
        "SELECT document_format, context_header FROM embeddings.targets"
    ).fetchone() == ("auto", None)
    run_once()
    rows = chunk_rows(conn)
    assert {r["id"] for r in rows} == {1, 2, 3, 4, 5}
    model = embedders.get(minilm)
    for key, content in files.items():
        text, expected = expected_chunks(tokenizer, content)
        mine = [r for r in rows if r["id"] == key]
        assert [r["chunk"] for r in mine] == [c.chunk.text for c in expected]
        for row, chunk in zip(mine, expected, strict=True):
            assert text[row["start_offset"] : row["end_offset"]] == row["chunk"]  # exact slice
            assert row["headings"] == list(chunk.headings)
            assert row["page"] == chunk.page
        # What was embedded is the header and the chunk, not the chunk alone.
        vectors = model.embed([c.embedding_input for c in expected])
        for row, vector in zip(mine, vectors, strict=True):
            assert float(np.dot(np.array(row["embedding"]), vector)) > 0.999
    by_chunk = {r["chunk"]: r for r in rows}
    assert by_chunk["It takes 14 days."]["headings"] == ["Help centre", "Refunds"]
    assert by_chunk["At most five days move to the next year."]["headings"] == [
        "Holidays",
        "Carrying over",
    ]
    laptops = next(r for r in rows if "Disks are encrypted" in r["chunk"])
    assert laptops["headings"] == ["Security policy", "Laptops"]
    pdf = [r for r in rows if r["id"] == 3]
    assert {r["page"] for r in pdf} == {1, 2}, "a PDF's chunks keep their pages"
    assert [r["headings"] for r in rows if r["id"] == 5] == [[]]  # plain text: no heading
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_search_returns_each_result_with_its_heading_path_and_page(
    conn: Conn,
    files: dict[int, bytes],
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
    minilm: str,
    settings: Settings,
) -> None:
    conn.execute("SELECT embeddings.enable_fts('files', 'english')")
    run_once()
    request = SearchRequest("files", "how long does a refund take", k=2)
    found = search.run(conn, embedders.get, request)
    assert found[0]["key"] == 1
    assert found[0]["content"] == "It takes 14 days."
    assert (found[0]["headings"], found[0]["page"]) == (["Help centre", "Refunds"], None)
    pdf = search.run(conn, embedders.get, SearchRequest("files", "clean the filter monthly", k=1))
    assert (pdf[0]["key"], pdf[0]["page"]) == (3, 2)
    assert "Clean the filter" in pdf[0]["content"]
    hybrid = search.run(
        conn, embedders.get, SearchRequest("files", "filter warm water", k=1, mode="hybrid")
    )
    assert (hybrid[0]["key"], hybrid[0]["text_rank"]) == (3, 1)
    assert hybrid[0]["page"] in (1, 2) and hybrid[0]["headings"] == []
    # The SQL functions return them too, for callers of embeddings.search() itself.
    vector = embedders.get(minilm).embed(["warm water filter"])[0]
    row = conn.execute(
        "SELECT key, headings, page FROM embeddings.search('files', %s::halfvec, 1)",
        (str(vector.tolist()),),
    ).fetchone()
    assert row is not None and row[:2] == (3, []) and row[2] in (1, 2)


def test_a_keyword_search_for_a_heading_word_finds_the_chunks_of_its_section(
    conn: Conn,
    files: dict[int, bytes],
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
    minilm: str,
) -> None:
    """A section's heading is in its chunks' full text (weight A), not only in their heading
    path: "refunds" finds the Refunds section, whose text never says it, in both of hybrid
    search's full-text matches; a heading's word ranks above the same word once in a text."""
    conn.execute(
        "INSERT INTO files VALUES (6, 'file 6', convert_to(%s, 'UTF8'))",
        ("# Warehouse\n\nWe sort parcels here before shipping, and stack the crates.\n",),
    )
    conn.execute("SELECT embeddings.enable_fts('files', 'english')")
    run_once()

    def by_text(question: str, match: str) -> list[tuple[Any, ...]]:
        vector = embedders.get(minilm).embed([question])[0]
        return conn.execute(
            "SELECT key, content, headings FROM embeddings.hybrid_search('files', %s,"
            " %s::halfvec, 10, text_match => %s) WHERE text_rank IS NOT NULL ORDER BY text_rank",
            (question, str(vector.tolist()), match),
        ).fetchall()

    for match in ("any", "all"):
        assert by_text("refunds", match) == [(1, "It takes 14 days.", ["Help centre", "Refunds"])]
        assert by_text("carrying over", match) == [
            (2, "At most five days move to the next year.", ["Holidays", "Carrying over"])
        ]
    shipping = [(key, headings) for key, _, headings in by_text("shipping", "all")]
    assert shipping == [(1, ["Help centre", "Shipping"]), (6, ["Warehouse"])]
    # Every heading of a path, the deepest (the worker makes at most MAX_DEPTH) included.
    deep = "".join(f"{'#' * min(n, 6)} level{n} heading\n\n" for n in range(1, 7)) + "body\n"
    conn.execute("INSERT INTO files VALUES (7, 'deep', convert_to(%s, 'UTF8'))", (deep,))
    run_once()
    found = conn.execute(
        "SELECT id, headings FROM files_chunks WHERE fts @@ to_tsquery('english', 'level1 & level6')"
    ).fetchall()
    assert found == [(7, [f"level{n} heading" for n in range(1, 7)])]
    path = ["h"] * 8 + ["ninth"]
    conn.execute("UPDATE files_chunks SET headings = %s WHERE id = 7", (path,))
    ninth = conn.execute(
        "SELECT count(*) FROM files_chunks WHERE fts @@ to_tsquery('english', 'ninth')"
    ).fetchone()
    assert ninth == (1,)


def test_a_text_column_read_as_markdown_or_not_gets_the_full_text_of_its_kind(
    conn: Conn, minilm: str
) -> None:
    """The chunk table's tsvector follows the target's kind when watch() changes it: with
    headings for Markdown (made again, after them), as before for plain text."""
    conn.execute("CREATE TABLE pages (id bigint PRIMARY KEY, body text)")
    reads_headings = (
        "SELECT embeddings_internal.fts_reads_headings('pages_chunks', 'fts'),"
        " (SELECT array_agg(attname ORDER BY attnum) FROM pg_attribute"
        "  WHERE attrelid = 'pages_chunks'::regclass AND attnum > 0 AND NOT attisdropped)"
    )
    watch = (
        "SELECT embeddings.watch('pages', 'body', model => %s, chunk_tokens => 64, fts => 'english'"
    )
    conn.execute(watch + ")", (minilm,))
    found = conn.execute(reads_headings).fetchone()
    assert found is not None
    plain, columns = found
    assert not plain and columns.index("fts") < columns.index("headings")
    conn.execute(watch + ", format => 'markdown')", (minilm,))
    found = conn.execute(reads_headings).fetchone()
    assert found is not None
    headed, columns = found
    assert headed and columns[-1] == "fts"
    conn.execute(watch + ", format => 'text')", (minilm,))
    assert conn.execute(reads_headings).fetchone() == (True, columns)  # text is a document too


def test_a_document_that_cannot_be_read_fails_alone_naming_its_format(
    conn: Conn, files: dict[int, bytes], run_once: Callable[..., Worker]
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO files VALUES (%s, 'bad', %s)",
            [
                (10, b"%PDF-1.4\nthis is not a PDF at all"),
                (11, encrypted(pdf_bytes([["secret"]]), "hunter2")),
                (12, b"\x89PNG\r\n\x1a\n" + bytes(64)),
            ],
        )
    run_once()
    failures = dict(
        conn.execute("SELECT row_key::bigint, last_error FROM embeddings.failures").fetchall()
    )
    assert sorted(failures) == [10, 11, 12]
    assert failures[10].startswith("pdf document: cannot be read")
    assert failures[11].startswith("pdf document: encrypted")
    assert failures[12].startswith("unknown document: not a format we read: a PNG image")
    # For good: the same bytes fail the same way, no attempt is left to make.
    assert conn.execute(
        "SELECT array_agg(DISTINCT attempts) FROM embeddings.failures"
    ).fetchone() == ([1],)
    # Nothing else was held up.
    assert {r["id"] for r in chunk_rows(conn)} == {1, 2, 3, 4, 5}


def test_a_changed_file_re_embeds_only_the_sections_that_changed(
    conn: Conn,
    files: dict[int, bytes],
    run_once: Callable[..., Worker],
    embedded_texts: list[str],
) -> None:
    run_once()
    before = {r["chunk_hash"]: r["embedding"] for r in chunk_rows(conn) if r["id"] == 1}
    conn.execute(
        "UPDATE files SET body = %s WHERE id = 1",
        (MARKDOWN.replace("It takes 14 days.", "It takes ten working days.").encode(),),
    )
    embedded_texts.clear()
    run_once()
    assert embedded_texts == ["Help centre\nRefunds\n\nIt takes ten working days."]
    mine = [r for r in chunk_rows(conn) if r["id"] == 1]
    assert [r["chunk"] for r in mine][1] == "It takes ten working days."
    unchanged = [r for r in mine if r["chunk_hash"] in before]
    assert len(unchanged) == len(mine) - 1
    assert all(r["embedding"] == before[r["chunk_hash"]] for r in unchanged)


def test_a_text_column_of_markdown_with_its_own_header_template(
    conn: Conn,
    minilm: str,
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
    tokenizer: Any,
) -> None:
    conn.execute("CREATE TABLE pages (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO pages VALUES (1, %s)", (MARKDOWN,))
    conn.execute(
        "SELECT embeddings.watch('pages', 'body', model => %s, chunk_tokens => 64,"
        " chunk_overlap => 0, format => 'markdown', context_header => %s)",
        (minilm, "Section: {headings}. "),
    )
    run_once()
    rows = chunk_rows(conn, "pages_chunks")
    template = HeaderTemplate("Section: {headings}. ")
    _, expected = expected_chunks(tokenizer, MARKDOWN, template, format="markdown")
    assert [(r["chunk"], r["headings"]) for r in rows] == [
        (c.chunk.text, list(c.headings)) for c in expected
    ]
    refunds = next(r for r in rows if r["chunk"] == "It takes 14 days.")
    vector = embedders.get(minilm).embed(["Section: Refunds. It takes 14 days."])[0]
    assert float(np.dot(np.array(refunds["embedding"]), vector)) > 0.999
    # Another template is another embedding input: every document is queued again.
    conn.execute(
        "SELECT embeddings.watch('pages', 'body', model => %s, chunk_tokens => 64,"
        " chunk_overlap => 0, context_header => '')",
        (minilm,),
    )
    assert conn.execute(
        "SELECT document_format, context_header FROM embeddings.targets"
    ).fetchone() == (
        "markdown",
        "",
    )
    run_once()
    refunds = next(r for r in chunk_rows(conn, "pages_chunks") if r["chunk"] == "It takes 14 days.")
    vector = embedders.get(minilm).embed(["It takes 14 days."])[0]
    assert float(np.dot(np.array(refunds["embedding"]), vector)) > 0.999


def test_a_document_over_the_ceiling_fails_alone_and_is_recorded(
    conn: Conn, files: dict[int, bytes], run_once: Callable[..., Worker]
) -> None:
    # The ceiling is on the extracted text: the HTML's markup does not count, its text does.
    big = "<p>" + "word " * 3000 + "</p>"
    conn.execute("INSERT INTO files VALUES (20, 'big', %s)", (big.encode(),))
    run_once(max_document_bytes=10_000)
    failures = dict(
        conn.execute("SELECT row_key::bigint, last_error FROM embeddings.failures").fetchall()
    )
    assert list(failures) == [20]
    assert "over EMBED_MAX_DOCUMENT_BYTES=10,000" in failures[20]
    assert conn.execute(
        "SELECT state, bytes FROM embeddings.documents WHERE row_key = '20'"
    ).fetchone() == ("over_ceiling", len(big.encode()))
    assert {r["id"] for r in chunk_rows(conn)} == {1, 2, 3, 4, 5}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("'body'", "content column public.files.body is bytea: documents are chunked"),
        (
            "'name', chunk_tokens => 64, format => 'pdf'",
            "format => 'pdf' needs a bytea content column",
        ),
        (
            "'name', chunk_tokens => 64, format => 'auto'",
            "format => 'auto' needs a bytea content column",
        ),
        ("'body', chunk_tokens => 64, format => 'odt'", "unknown document format 'odt'"),
        (
            "'name', format => 'html'",
            "format and context_header are for documents, which are chunked",
        ),
        (
            "'name', chunk_tokens => 64, context_header => '{title}'",
            "context_header is for documents",
        ),
        (
            "'body', chunk_tokens => 64, context_header => '{author}: '",
            "{author} is not a placeholder; its placeholders are {title} and {headings}",
        ),
        (
            "'body', chunk_tokens => 64, context_header => '{title!r}'",
            "{title!r} is not a placeholder; its placeholders are {title} and {headings}",
        ),
        (  # each message says which part (a QA pass: the same message for all three)
            "'body', chunk_tokens => 64, context_header => '{{title}} {title'",
            "an unmatched {; its placeholders",
        ),
    ],
)
def test_watch_refuses_what_documents_cannot_be(
    conn: Conn, minilm: str, arguments: str, message: str
) -> None:
    conn.execute("CREATE TABLE files (id bigint PRIMARY KEY, name text, body bytea)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(f"SELECT embeddings.watch('files', {arguments}, model => %s)", (minilm,))


def test_a_bytea_document_trigger_compares_the_bytes_not_their_text(
    conn: Conn, files: dict[int, bytes]
) -> None:
    (target,) = conn.execute("SELECT id FROM embeddings.targets").fetchone() or (0,)
    """The triggers run in the application's statement: they compare the bytes as they are
    (no encoding of a whole document twice per row), and an unchanged file queues nothing."""
    functions = "".join(
        r[0]
        for r in conn.execute(
            "SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.proname ~ '^embeddings_[0-9]+_(insert|update)$'"
        )
    )
    assert "encode" not in functions
    clear_queue(conn)
    conn.execute("UPDATE files SET name = 'renamed', body = body WHERE id = 3")
    assert messages(conn) == []
    conn.execute("UPDATE files SET body = body || '\\x00'::bytea WHERE id = 5")
    assert queued_keys(conn, target) == [5]


def test_the_cli_shows_where_each_result_is(
    conn: Conn, files: dict[int, bytes], run_once: Callable[..., Worker], dsn: str, model_path: str
) -> None:
    run_once()
    env = {"EMBED_MODEL_PATH": model_path}
    ask = ("search", "files", "how long does a refund take", "-k", "1", "--database-url", dsn)
    result = run_cli(*ask, env=env)
    assert result.returncode == 0, result.stderr
    assert "Help centre > Refunds" in result.stdout and "It takes 14 days." in result.stdout
    found = json.loads(run_cli(*ask, "--json", env=env).stdout)
    assert (found[0]["headings"], found[0]["page"]) == (["Help centre", "Refunds"], None)


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "read-again-each-piece"])
def test_a_long_document_is_embedded_a_piece_at_a_time_as_a_whole_one_would_be(
    conn: Conn,
    minilm: str,
    run_once: Callable[..., Worker],
    tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cached: bool,
) -> None:
    """A document longer than a batch's budget goes through several batches, each committing a
    piece; without the cache between pieces (a restarted worker) each piece extracts the file
    again and skips the committed chunks. Either way the chunks are the whole document's."""
    from worker.pipeline import pieces

    if not cached:
        monkeypatch.setattr(pieces.CACHE, "take", lambda key: None)
    sections = "\n\n".join(
        f"## Section {n}\n\n" + " ".join(f"Sentence {i} of section {n}." for i in range(12))
        for n in range(30)
    )
    body = f"# Long manual\n\n{sections}\n".encode()
    conn.execute("CREATE TABLE files (id bigint PRIMARY KEY, body bytea)")
    conn.execute("INSERT INTO files VALUES (1, %s)", (body,))
    conn.execute(
        "SELECT embeddings.watch('files', 'body', model => %s, chunk_tokens => 64,"
        " chunk_overlap => 0)",
        (minilm,),
    )
    with caplog.at_level("INFO", logger="worker.pipeline.chunks.writing"):
        run_once(piece_tokens=256)
    pieces_logged = [
        r for r in caplog.records if "the rest goes back to the queue" in r.getMessage()
    ]
    assert len(pieces_logged) >= 3, "the document went through several batches"
    _, expected = expected_chunks(tokenizer, body)
    assert len(expected) > 30
    rows = chunk_rows(conn)
    assert [(r["seq"], r["chunk"], r["headings"]) for r in rows] == [
        (c.chunk.seq, c.chunk.text, list(c.headings)) for c in expected
    ]
    assert conn.execute("SELECT count(*) FROM embeddings.documents").fetchone() == (0,)
