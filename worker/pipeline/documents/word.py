"""DOCX (Word 2007 and later), read with python-docx: the body's paragraphs and tables in their
order, a section per paragraph in a "Heading N" style. The title is the document's own (its
core properties), else the first paragraph in the "Title" style."""

from __future__ import annotations

import io
import re

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from worker.pipeline.documents.extracted import ExtractedDocument, TextBuilder, collapse_spaces

_HEADING_STYLE = re.compile(r"heading ([1-9])", re.I)


def extract(data: bytes, *, max_bytes: int) -> ExtractedDocument:
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
