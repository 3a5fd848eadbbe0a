"""The hostile-input corpus: for every format the worker parses (detection.FORMATS, and bytes
whose format is detected), files of each hostile shape, and what each must end as.

A new parser joins in one line: its format in detection.FORMATS makes
test_every_format_the_worker_parses_is_in_the_corpus fail until its files are here. Each file
is made in the test session (tests/support/hostile_files.py); none is committed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.support import hostile_files as make

DETECTED = "auto"  # a target without a format: the bytes' format is detected
SHAPES = ("bomb", "super-linear", "derived size", "encoding", "exception")
DONE = "done"  # the row is embedded (or cleared, when its text is empty)

# What a budget's failure says (tests/security/test_hostile_inputs.py sets small budgets).
TIME_OR_CPU = r"parsing (took longer than|used more than \d+ s of CPU)"
MEMORY = r"parsing needed more than \d+ MiB"


@dataclass(frozen=True)
class Hostile:
    format: str  # the target's format (DETECTED: none)
    shape: str  # one of SHAPES
    name: str
    make: Callable[[], bytes]
    ends: str  # a pattern its failure matches (re.search), or DONE

    @property
    def id(self) -> str:
        return f"{self.format}: {self.name}"


CORPUS = (
    # PDF
    Hostile("pdf", "bomb", "stream inflating 400 KB to 400 MiB", make.pdf_inflation_bomb, DONE),
    Hostile("pdf", "bomb", "one page 300,000 times", make.pdf_repeated_pages, "LimitReachedError"),
    Hostile("pdf", "super-linear", "arrays nested 200,000 deep", make.pdf_deep_arrays, DONE),
    Hostile("pdf", "derived size", "30,000 pages", make.pdf_many_pages, "30,000 pages, more than"),
    Hostile("pdf", "derived size", "a 600 KB title", make.pdf_huge_title, DONE),
    Hostile(
        "pdf",
        "exception",
        "a page tree that is its own kid",
        make.pdf_page_tree_cycle,
        "cyclic page references",
    ),
    Hostile("pdf", "exception", "cut in half", make.pdf_truncated, "pdf document: cannot be read"),
    Hostile(
        "pdf",
        "exception",
        "a PNG image",
        make.png,
        r"^pdf document: not a PDF \(it is a PNG image\)",
    ),
    Hostile(
        "pdf", "encoding", "not a PDF", lambda: b"%PDF-1.4\n\xff\xfe garbage", "cannot be read"
    ),
    # DOCX
    Hostile(
        "docx",
        "bomb",
        "10 million empty elements (60 MB of XML)",
        lambda: make.docx_element_bomb(10_000_000),
        MEMORY,
    ),
    Hostile("docx", "bomb", "a part inflating to 200 MiB", make.docx_zip_bomb, "refused unread"),
    Hostile("docx", "bomb", "a billion laughs", make.docx_entity_bomb, "entity amplification"),
    Hostile(
        "docx", "super-linear", "elements nested 200,000 deep", make.docx_deep, "Excessive depth"
    ),
    Hostile("docx", "derived size", "a 40 KB title and heading", make.docx_huge_title, DONE),
    Hostile(
        "docx",
        "exception",
        "a zip of no Word XML",
        make.zip_not_docx,
        r"^docx document: not a DOCX document \(it is a zip archive that is not a DOCX",
    ),
    Hostile(
        "docx",
        "encoding",
        "a member name flagged UTF-8 that is not",
        make.zip_with_bad_utf8_name,
        "UnicodeDecodeError",
    ),
    # HTML
    Hostile(
        "html", "exception", "an unknown marked section", make.html_marked_section, "AssertionError"
    ),
    Hostile(
        "html",
        "super-linear",
        "50,000 nested <svg>, then stray end tags",
        make.html_nested_svg,
        DONE,
    ),
    Hostile(
        "html",
        "super-linear",
        "40,000 unclosed quoted attributes",
        make.html_unclosed_quotes,
        TIME_OR_CPU,
    ),
    Hostile("html", "bomb", "elements nested 50,000 deep", make.html_deep, DONE),
    Hostile("html", "derived size", "a 1.2 MB title, a 0.8 MB heading", make.html_huge_title, DONE),
    Hostile("html", "derived size", "21,000 headings", make.html_many_headings, DONE),
    Hostile("html", "encoding", "Latin-1, not UTF-8", make.invalid_utf8, "not valid UTF-8"),
    # Markdown
    Hostile(
        "markdown",
        "super-linear",
        "a heading, then 100,000 spaces",
        make.markdown_heading_then_spaces,
        DONE,
    ),
    Hostile(
        "markdown",
        "super-linear",
        "a setext heading over 1,000 lines",
        make.markdown_setext_paragraph,
        DONE,
    ),
    Hostile("markdown", "super-linear", "2,000 fences", make.markdown_fences, DONE),
    Hostile("markdown", "derived size", "21,000 headings", make.markdown_many_headings, DONE),
    Hostile("markdown", "encoding", "Latin-1, not UTF-8", make.invalid_utf8, "not valid UTF-8"),
    Hostile("markdown", "exception", "NUL bytes", make.nul_bytes, "a NUL byte at offset"),
    # text (not parsed: read in the worker, and it costs nothing to try)
    Hostile("text", "derived size", "a 128 KB line", make.long_line, DONE),
    Hostile("text", "encoding", "Latin-1, not UTF-8", make.invalid_utf8, "not valid UTF-8"),
    Hostile("text", "exception", "NUL bytes", make.nul_bytes, "a NUL byte at offset"),
    # bytes whose format is detected
    Hostile(
        DETECTED,
        "encoding",
        "a zip's member name flagged UTF-8 that is not",
        make.zip_with_bad_utf8_name,
        "UnicodeDecodeError",
    ),
    Hostile(DETECTED, "exception", "a PNG image", make.png, "not a format we read: a PNG image"),
    Hostile(DETECTED, "exception", "binary data", make.nul_bytes, "binary data"),
    Hostile(
        DETECTED,
        "exception",
        "an HTML page html.parser raises on",
        make.html_marked_section,
        "AssertionError",
    ),
    Hostile(
        DETECTED,
        "bomb",
        "a DOCX of 10 million empty elements",
        lambda: make.docx_element_bomb(10_000_000),
        MEMORY,
    ),
    Hostile(
        DETECTED,
        "super-linear",
        "a Markdown heading, then 100,000 spaces",
        make.markdown_heading_then_spaces,
        DONE,
    ),
    Hostile(DETECTED, "derived size", "a PDF of 30,000 pages", make.pdf_many_pages, "30,000 pages"),
)
