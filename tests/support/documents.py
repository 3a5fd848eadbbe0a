"""Real documents made in the test: PDFs written by hand (a font, a content stream per page,
the cross-reference table), encrypted by pypdf's writer; DOCX files by python-docx."""

from __future__ import annotations

import io

import docx
import pypdf


def pdf_bytes(pages: list[list[str]], *, title: str | None = None) -> bytes:
    """A valid PDF whose page k shows the lines pages[k], in Helvetica."""
    objects: list[bytes] = []  # object n is objects[n - 1]
    page_ids = [3 + 2 * k for k in range(len(pages))]
    font_id = 3 + 2 * len(pages)
    info_id = font_id + 1
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = b" ".join(b"%d 0 R" % n for n in page_ids)
    objects.append(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)))
    for k, lines in enumerate(pages):
        stream = (
            b"BT /F1 12 Tf 14 TL 72 720 Td "
            + b" ".join(b"(%s) Tj T*" % _escape(line) for line in lines)
            + b" ET"
        )
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
            % (font_id, page_ids[k] + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects.append(b"<< /Title (%s) >>" % _escape(title or ""))
    return pdf_of(objects, info=info_id if title is not None else None)


def pdf_of(objects: list[bytes], *, root: int = 1, info: int | None = None) -> bytes:
    """A PDF of these objects (object n is objects[n - 1]) with a correct cross-reference."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (n, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    trailer = b"<< /Size %d /Root %d 0 R" % (len(objects) + 1, root)
    if info is not None:
        trailer += b" /Info %d 0 R" % info
    out.write(b"trailer\n%s >>\nstartxref\n%d\n%%%%EOF\n" % (trailer, xref))
    return out.getvalue()


def _escape(text: str) -> bytes:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")


def encrypted(pdf: bytes, password: str) -> bytes:
    """The PDF encrypted (RC4, which pypdf writes without the `cryptography` package)."""
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(blocks: list[tuple[str, str]], *, title: str | None = None) -> bytes:
    """A DOCX of (style, text) paragraphs: 'Heading 1', 'Heading 2', 'Title', 'Normal'... and
    ('table', 'a|b;c|d') for a table of rows split at ';' and cells at '|'."""
    document = docx.Document()
    if title is not None:
        document.core_properties.title = title
    for style, text in blocks:
        if style == "table":
            rows = [row.split("|") for row in text.split(";")]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            for r, cells in enumerate(rows):
                for c, cell in enumerate(cells):
                    table.cell(r, c).text = cell
        else:
            document.add_paragraph(text, style=style)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
