"""Heading-aware chunks (worker/pipeline/documents/splitting.py) with the real all-MiniLM-L6-v2
tokenizer, as the chunking tests use it: a heading starts a chunk, offsets are exact, each
chunk carries its headings, page and context header; the header template is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.documents import docx_bytes, pdf_bytes
from tests.support.models import shared_models_dir
from worker import exceptions
from worker.models import onnx
from worker.pipeline.chunking import Splitter
from worker.pipeline.documents.extraction import extract
from worker.pipeline.documents.headers import HeaderTemplate
from worker.pipeline.documents.splitting import DocumentChunk, DocumentSplitter


@pytest.fixture(scope="module")
def tokenizer() -> object:
    path: Path = shared_models_dir() / "all-MiniLM-L6-v2" / "tokenizer.json"
    if not path.exists():
        pytest.skip(f"{path} is absent: the real tokenizer is needed")
    return onnx.load_tokenizer(path, max_tokens=None)


def check(text: str, chunks: list[DocumentChunk], splitter: DocumentSplitter) -> None:
    assert [c.chunk.seq for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert text[c.chunk.start : c.chunk.end] == c.chunk.text  # exact slice of the text
        assert c.embedding_input == c.header + c.chunk.text
        tokens = splitter.count_tokens([c.embedding_input])[0]
        assert tokens <= splitter.chunk_tokens, (tokens, c.embedding_input)


SECTIONS = """# Help centre

Welcome.

## Refunds
It takes 14 days.

## Shipping
""" + " ".join(f"Parcel rule number {n} applies to orders abroad." for n in range(40))


def test_markdown_headings_start_chunks_with_a_context_header(tokenizer: object) -> None:
    splitter = DocumentSplitter(tokenizer, 64, 8)
    document = extract(SECTIONS, format="markdown", max_bytes=0)
    chunks = splitter.split(document)
    check(document.text, chunks, splitter)
    assert [(c.headings, c.chunk.text) for c in chunks[:2]] == [
        (("Help centre",), "Welcome."),
        (("Help centre", "Refunds"), "It takes 14 days."),
    ]
    # the title is the first heading: the path does not repeat it
    assert chunks[0].header == "Help centre\n\n\n"
    assert chunks[1].header == "Help centre\nRefunds\n\n"
    shipping = chunks[2:]
    assert len(shipping) > 3, "a long section still splits by the budget"
    assert all(c.headings == ("Help centre", "Shipping") for c in shipping)
    assert all(c.header == "Help centre\nShipping\n\n" for c in shipping)
    assert shipping[0].chunk.text.startswith("Parcel rule number 0")
    assert all(c.page is None for c in chunks)
    # Chunks never span two sections: each lies inside its own section's body.
    for c in chunks:
        section = next(s for s in document.sections if s.headings == c.headings)
        assert section.start <= c.chunk.start < c.chunk.end <= section.end


def test_the_header_takes_its_tokens_from_the_budget(tokenizer: object) -> None:
    long = " ".join(f"word{n}" for n in range(300))
    document = extract(
        f"# A rather long title for a document\n\n## Section\n{long}",
        format="markdown",
        max_bytes=0,
    )
    splitter = DocumentSplitter(tokenizer, 48, 4)
    chunks = splitter.split(document)
    check(document.text, chunks, splitter)
    header_tokens = splitter.count_tokens([chunks[0].header])[0]
    assert max(c.chunk.tokens for c in chunks) <= 48 - header_tokens


def test_html_and_docx_sections_become_chunks(tokenizer: object) -> None:
    html = "<title>Guide</title><h1>Refunds</h1><p>It takes 14 days.</p><h2>Abroad</h2><p>30.</p>"
    docx = docx_bytes(
        [
            ("Heading 1", "Refunds"),
            ("Normal", "It takes 14 days."),
            ("Heading 2", "Abroad"),
            ("Normal", "30."),
        ],
        title="Guide",
    )
    splitter = DocumentSplitter(tokenizer, 64, 8, HeaderTemplate("[{title}] {headings}: ", " / "))
    for document in (extract(html, format="html", max_bytes=0), extract(docx, max_bytes=0)):
        chunks = splitter.split(document)
        check(document.text, chunks, splitter)
        assert [(c.headings, c.header, c.chunk.text) for c in chunks] == [
            (("Refunds",), "[Guide] Refunds: ", "It takes 14 days."),
            (("Refunds", "Abroad"), "[Guide] Refunds / Abroad: ", "30."),
        ]


def test_a_heading_over_200_characters_is_found_by_all_its_words(tokenizer: object) -> None:
    """Its words past the 200th character were in the text but in no chunk (the path held its
    first 199 characters): they are now the start of its section's first chunk, and the
    header holds the whole words before them."""
    words = [f"clause{k}" for k in range(60)]  # 469 characters
    body = "Refunds take 14 days."
    splitter = DocumentSplitter(tokenizer, 128, 8)
    for document in (
        extract(f"<h2>{' '.join(words)}</h2><p>{body}</p>", format="html", max_bytes=0),
        extract(f"## {' '.join(words)}\n\n{body}\n", format="markdown", max_bytes=0),
    ):
        chunks = splitter.split(document)
        check(document.text, chunks, splitter)
        first = chunks[0]
        held = first.headings[-1].removesuffix("…").split()
        assert held == words[: len(held)] and first.header == f"\n{first.headings[-1]}\n\n"
        assert first.chunk.text.split()[: len(words) - len(held)] == words[len(held) :]
        assert body in " ".join(c.chunk.text for c in chunks)


def test_a_document_whose_only_text_is_headings_is_chunked_by_its_headings(
    tokenizer: object,
) -> None:
    """Its headings are all a user can search it by: they are its chunks (no header, which
    would only repeat them); a document with no text at all still has none."""
    splitter = DocumentSplitter(tokenizer, 64, 8)
    markdown = "# Refund policy: refunds take 14 days\n"
    html = "<html><body><h1>Contact us at help@example.com</h1></body></html>"
    found = []
    for document in (
        extract(markdown, format="markdown", max_bytes=0),
        extract(html, format="html", max_bytes=0),
    ):
        chunks = splitter.split(document)
        check(document.text, chunks, splitter)
        found.append([(c.headings, c.header, c.chunk.text.strip()) for c in chunks])
    assert found == [
        [((), "", "# Refund policy: refunds take 14 days")],
        [((), "", "Contact us at help@example.com")],
    ]
    for empty in ("<html></html>", "   "):
        assert splitter.split(extract(empty, format="html", max_bytes=0)) == []


def test_a_heading_with_nothing_under_it_is_in_a_chunk(tokenizer: object) -> None:
    """A bare heading before a sibling's section, or at the end, is a chunk of its own under its
    parent's path (a QA pass: its text was in no chunk); one whose subsections have text is in
    their heading path, and gets no chunk of its own."""
    splitter = DocumentSplitter(tokenizer, 64, 8)
    markdown = "# Guide\n\nIntro.\n\n## Returns\n\n## Shipping\n\nTwo days.\n\n## Contact\n"
    html = (
        "<h1>Guide</h1><p>Intro.</p><h2>Returns</h2><h2>Shipping</h2><p>Two days.</p>"
        "<h2>Contact</h2><h3>By mail</h3>"
    )
    found = []
    for document in (
        extract(markdown, format="markdown", max_bytes=0),
        extract(html, format="html", max_bytes=0),
    ):
        chunks = splitter.split(document)
        check(document.text, chunks, splitter)
        found.append([(c.headings, c.chunk.text) for c in chunks])
    assert found == [
        [
            (("Guide",), "Intro."),
            (("Guide",), "## Returns"),
            (("Guide", "Shipping"), "Two days."),
            (("Guide",), "## Contact"),
        ],
        [
            (("Guide",), "Intro."),
            (("Guide",), "Returns"),
            (("Guide", "Shipping"), "Two days."),
            (("Guide",), "Contact\n\nBy mail"),
        ],
    ]
    # A title over sections with text is in their heading path: no chunk of its own.
    nested = extract("# Guide\n\n## Shipping\n\nTwo days.\n", format="markdown", max_bytes=0)
    assert [(c.headings, c.chunk.text) for c in splitter.split(nested)] == [
        (("Guide", "Shipping"), "Two days.")
    ]


def test_pdf_chunks_say_their_page(tokenizer: object) -> None:
    pages = [[f"Page {p} sentence {n} about the topic." for n in range(12)] for p in (1, 2, 3)]
    document = extract(pdf_bytes(pages, title="Report"), max_bytes=0)
    splitter = DocumentSplitter(tokenizer, 40, 0)
    chunks = splitter.split(document)
    check(document.text, chunks, splitter)
    assert all(c.header == "Report\n\n\n" and c.headings == () for c in chunks)
    for c in chunks:  # the page holding most of its sentences
        held = {p: c.chunk.text.count(f"Page {p} ") for p in (1, 2, 3)}
        assert c.page == max(held, key=lambda p: (held[p], -p)), (c.page, held)
    assert {c.page for c in chunks} == {1, 2, 3}
    assert [c.page for c in chunks] == sorted(c.page or 0 for c in chunks)


def test_a_pdf_chunk_is_cited_to_the_page_holding_most_of_its_text(tokenizer: object) -> None:
    """docs/documents.md's example (chunk_tokens 200, overlap 20) on a 4-page PDF: a chunk that
    begins in the last words of a page and runs on into the next is the next page's chunk. Each
    page's sentences name their page, so the page holding most of a chunk's words is known."""
    pages = [
        [f"Page{p} sentence {n} says something about page {p} of the report." for n in range(30)]
        for p in (1, 2, 3, 4)
    ]
    document = extract(pdf_bytes(pages, title="Report"), max_bytes=0)
    chunks = DocumentSplitter(tokenizer, 200, 20).split(document)
    straddling = 0
    for c in chunks:
        words = c.chunk.text.split()
        by_page = {p: sum(w == f"Page{p}" for w in words) for p in (1, 2, 3, 4)}
        most = max(by_page, key=lambda p: (by_page[p], -p))
        straddling += sum(1 for n in by_page.values() if n) > 1
        assert c.page == most, (c.page, by_page, c.chunk.text[:80])
    assert straddling >= 2  # (the case in question happens here)


def test_plain_text_chunks_are_exactly_the_splitters(tokenizer: object) -> None:
    text = "\n\n".join(
        f"# Part {p}\n" + " ".join(f"Sentence {n} of part {p}." for n in range(30))
        for p in range(4)
    )
    for tokens, overlap in ((32, 0), (64, 16), (200, 20)):
        plain = Splitter(tokenizer, tokens, overlap).split(text)
        chunks = DocumentSplitter(tokenizer, tokens, overlap).split(extract(text, max_bytes=0))
        assert [c.chunk for c in chunks] == plain
        assert all(c.header == "" and c.headings == () and c.page is None for c in chunks)


def test_digests_change_with_the_header(tokenizer: object) -> None:
    splitter = DocumentSplitter(tokenizer, 64, 8)
    one = splitter.split(extract("# A\n## B\nSame body.", format="markdown", max_bytes=0))
    two = splitter.split(extract("# C\n## B\nSame body.", format="markdown", max_bytes=0))
    assert one[0].chunk.text == two[0].chunk.text
    assert one[0].digest("m") != two[0].digest("m")


def test_blank_sections_make_no_blank_chunk(tokenizer: object) -> None:
    """A's and B's bodies are blank: no chunk of blank text; A is in C's heading path, and B,
    which no later path holds, is a chunk of its own heading."""
    document = extract("# A\n\n## B\n\n## C\nText.", format="markdown", max_bytes=0)
    chunks = DocumentSplitter(tokenizer, 64, 8).split(document)
    assert [(c.chunk.seq, c.headings, c.chunk.text) for c in chunks] == [
        (0, ("A",), "## B"),
        (1, ("A", "C"), "Text."),
    ]


def test_the_default_template() -> None:
    template = HeaderTemplate()
    assert template.render("Guide", ("Refunds", "Abroad")) == "Guide\nRefunds > Abroad\n\n"
    assert template.render("Guide", ("Guide", "Refunds")) == "Guide\nRefunds\n\n"
    assert template.render(None, ("Refunds",)) == "\nRefunds\n\n"
    assert template.render(None, ()) == ""
    assert HeaderTemplate("{{{title}}} ").render("T", ()) == "{T} "


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{title} {section}", r"unknown placeholder \{section\}; the placeholders are"),
        ("{} {title}", r"unknown placeholder \{\} \(a placeholder needs a name\)"),
        ("{0}", r"unknown placeholder \{0\}"),
        ("{title.upper}", r"unknown placeholder \{title.upper\}"),
        ("{title!r}", r"\{title\} takes no conversion or format spec"),
        ("{headings:>20}", r"\{headings\} takes no conversion or format spec"),
        ("{title", r"write a brace as \{\{ or \}\}"),
        ("title}", r"write a brace as \{\{ or \}\}"),
    ],
)
def test_template_mistakes_are_clear_errors(template: str, message: str) -> None:
    with pytest.raises(exceptions.ConfigError, match=r"^context header template .*" + message):
        HeaderTemplate(template)
