"""DOCX (Word 2007 and later), read with python-docx: the body's paragraphs and tables in their
order, a section per paragraph in a "Heading N" style. The title is the document's own (its
core properties), else the first paragraph in the "Title" style."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable

import docx
from docx.document import Document
from docx.enum.style import WD_STYLE_TYPE
from docx.table import Table
from docx.text.paragraph import Paragraph

from worker import exceptions
from worker.pipeline.documents.extracted import (
    MAX_TITLE,
    ExtractedDocument,
    TextBuilder,
    collapse_spaces,
    headline,
)

_HEADING_STYLE = re.compile(r"heading ([1-9])", re.I)

# A DOCX is a zip archive whose parts python-docx inflates in memory before a word is read: a
# few kilobytes can inflate to gigabytes (a zip bomb) and take the worker's memory with it. The
# parts may inflate to this many bytes per byte of text the ceiling allows (Word's XML is about
# ten times its text at most), and never less than the floor; without a ceiling, to the cap.
INFLATED_PER_TEXT_BYTE = 8
INFLATED_FLOOR = 64 * 2**20
INFLATED_CAP = 2**30


def extract(data: bytes, *, max_bytes: int) -> ExtractedDocument:
    _check_inflated_size(data, max_bytes)
    document = docx.Document(io.BytesIO(data))
    builder = TextBuilder("docx", max_bytes)
    title = headline(document.core_properties.title or "", MAX_TITLE) or None
    style_name = _style_names(document)
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            builder.paragraph(_table_text(block))
            continue
        style = style_name(block)
        heading = _HEADING_STYLE.fullmatch(style)
        if heading:
            builder.heading(int(heading.group(1)), block.text)
            continue
        if style.lower() == "title" and title is None:
            title = headline(block.text, MAX_TITLE) or None
        builder.paragraph(block.text.strip())
    builder.title = title
    return builder.build()


def _style_names(document: Document) -> Callable[[Paragraph], str]:
    """A paragraph's style name, as `paragraph.style` resolves it (its style id, else the
    default paragraph style), from one table of the styles: `paragraph.style` scans them all
    each time (30 s for a 20,000-paragraph document)."""
    paragraph_styles = [s for s in document.styles if s.type == WD_STYLE_TYPE.PARAGRAPH]
    names = {s.style_id: s.name or "" for s in paragraph_styles}
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    default_name = (default.name or "") if default is not None else ""

    def name(paragraph: Paragraph) -> str:
        style_id = paragraph._p.style  # the id only: no lookup
        return names.get(style_id, default_name) if style_id is not None else default_name

    return name


def _table_text(table: Table) -> str:
    """A line per row, its cells' text between ' | ' (a merged cell is read once per row)."""
    lines = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = collapse_spaces(cell.text)
            if not cells or cells[-1] != text:
                cells.append(text)
        line = " | ".join(c for c in cells if c)
        if line:
            lines.append(line)
    return "\n".join(lines)


def _check_inflated_size(data: bytes, max_bytes: int) -> None:
    """Refuses, unread, an archive whose parts inflate past the bound (zipfile never inflates a
    part past the size its entry declares, so the declared sizes bound what python-docx reads).
    A DocumentError, not DocumentTooLarge: nothing says the text is over the ceiling (it was
    never read), and raising the ceiling is no cure: python-docx would inflate the parts in the
    parse's memory budget, and a zip bomb inflates past any."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    limit = max(INFLATED_FLOOR, INFLATED_PER_TEXT_BYTE * max_bytes) if max_bytes else INFLATED_CAP
    if inflated > limit:
        bound = (
            f"{INFLATED_PER_TEXT_BYTE} per byte of text EMBED_MAX_DOCUMENT_BYTES allows, at least "
            f"{INFLATED_FLOOR // 2**20} MiB"
            if max_bytes
            else f"the cap of {INFLATED_CAP // 2**20} MiB without a ceiling"
        )
        raise exceptions.DocumentError(
            "docx",
            f"its parts would inflate to {inflated:,} bytes, more than the {limit:,} a DOCX may "
            f"inflate to ({bound}): refused unread, as a zip bomb; replace the file (the same "
            "bytes fail the same way)",
        )
