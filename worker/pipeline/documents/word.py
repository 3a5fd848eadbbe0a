"""DOCX (Word 2007 and later), read with python-docx: the body's paragraphs and tables in their
order, a section per paragraph in a "Heading N" style. The title is the document's own (its
core properties), else the first paragraph in the "Title" style."""

from __future__ import annotations

import io
import re
import zipfile

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from worker import exceptions
from worker.pipeline.documents.extracted import ExtractedDocument, TextBuilder, collapse_spaces

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
    title = collapse_spaces(document.core_properties.title or "") or None
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            builder.paragraph(_table_text(block))
            continue
        style = _style_name(block)
        heading = _HEADING_STYLE.fullmatch(style)
        if heading:
            builder.heading(int(heading.group(1)), block.text)
            continue
        if style.lower() == "title" and title is None:
            title = collapse_spaces(block.text) or None
        builder.paragraph(block.text.strip())
    builder.title = title
    return builder.build()


def _style_name(paragraph: Paragraph) -> str:
    style = paragraph.style
    return (style.name or "") if style is not None else ""


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
    part past the size its entry declares, so the declared sizes bound what python-docx reads)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    limit = max(INFLATED_FLOOR, INFLATED_PER_TEXT_BYTE * max_bytes) if max_bytes else INFLATED_CAP
    if inflated > limit:
        raise exceptions.DocumentTooLarge(
            "docx",
            f"its parts inflate to {inflated:,} bytes, more than {limit:,} "
            f"({INFLATED_PER_TEXT_BYTE} per byte of EMBED_MAX_DOCUMENT_BYTES={max_bytes:,}): "
            "refused unread (a zip bomb, or raise the ceiling)",
        )
