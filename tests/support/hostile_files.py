"""Hostile files, made in the test session (none is committed): bombs, super-linear shapes, huge
derived sizes, malformed encodings and parser exceptions, for every format the worker parses.

Each maker returns bytes; tests/security/hostile_inputs.py lists them in its corpus with what
each must end as. The sizes are the reviewers' where a defect was reported (the 120 MiB-of-XML
DOCX, the 100 KB Markdown file) and otherwise just past what makes the shape hurt."""

from __future__ import annotations

import io
import zipfile
import zlib

from tests.support.documents import docx_bytes, pdf_bytes, pdf_of

MIB = 2**20


# --- DOCX -----------------------------------------------------------------------------------------
def docx_with_body(
    body: bytes | None = None, *, repeat: int = 1, xml: bytes | None = None
) -> bytes:
    """A real DOCX (python-docx's own parts) whose document.xml is `xml`, or its own with `body`
    repeated `repeat` times as the body's content, written by streaming: a 120 MiB part costs
    no 120 MiB here."""
    source = zipfile.ZipFile(io.BytesIO(docx_bytes([("Normal", "x")])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for info in source.infolist():
            if info.filename != "word/document.xml":
                archive.writestr(info, source.read(info))
                continue
            part = zipfile.ZipInfo("word/document.xml")
            part.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(part, "w", force_zip64=True) as sink:
                if xml is not None:
                    sink.write(xml)
                    continue
                head = source.read(info).split(b"<w:body>", 1)[0]
                sink.write(head + b"<w:body>")
                block = (body or b"") * min(repeat, 100_000)
                for _ in range(repeat // 100_000):
                    sink.write(block)
                sink.write((body or b"") * (repeat % 100_000))
                sink.write(b"</w:body></w:document>")
    return out.getvalue()


def docx_element_bomb(elements: int = 21_000_000) -> bytes:
    """The reviewers' DOCX: ~184 KB whose document.xml is `elements` empty paragraphs (120 MiB of
    XML, under the archive check's limit); lxml's tree of it took 2.9 GiB."""
    return docx_with_body(b"<w:p/>", repeat=elements)


def docx_zip_bomb() -> bytes:
    """A member that inflates to 200 MiB of spaces: refused from the archive's directory."""
    return docx_with_body(b" " * MIB, repeat=200)


def docx_deep(depth: int = 200_000) -> bytes:
    """Elements nested `depth` deep (libxml2 refuses past 256 without its huge-tree option)."""
    return docx_with_body(b"<w:p>" * depth + b"</w:p>" * depth)


def docx_entity_bomb() -> bytes:
    """A billion laughs: entities of entities in document.xml's DOCTYPE."""
    entities = b'<!ENTITY a0 "lol">' + b"".join(
        b'<!ENTITY a%d "%s">' % (n, b"&a%d;" % (n - 1) * 10) for n in range(1, 10)
    )
    xml = (
        b'<?xml version="1.0"?><!DOCTYPE w:document [' + entities + b"]>"
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body><w:p><w:r><w:t>&a9;</w:t></w:r></w:p></w:body></w:document>"
    )
    return docx_with_body(xml=xml)


def docx_huge_title() -> bytes:
    return docx_bytes(
        [("Title", "A title " * 5_000), ("Heading 1", "H " * 5_000), ("Normal", "Body.")]
    )


def zip_with_bad_utf8_name() -> bytes:
    """A zip whose directory flags a member name as UTF-8 when it is not: zipfile raises
    UnicodeDecodeError (format detection opens every zip to look for word/document.xml)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        archive.writestr("\xff\xfe.xml", "x")  # written with the UTF-8 flag: c3 bf c3 be
    return out.getvalue().replace(b"\xc3\xbf\xc3\xbe.xml", b"\xff\xfe\xff\xfe.xml")


# --- PDF ------------------------------------------------------------------------------------------
_PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R %s>>"


def pdf_page_with_stream(stream: bytes, *, filtered: bool = False, resources: bytes = b"") -> bytes:
    head = b"<< /Length %d%s >>" % (len(stream), b" /Filter /FlateDecode" if filtered else b"")
    return pdf_of(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            _PAGE % resources,
            head + b"\nstream\n" + stream + b"\nendstream",
        ]
    )


def pdf_inflation_bomb(megabytes: int = 400) -> bytes:
    """A page whose content stream inflates from ~400 KB to `megabytes` MiB."""
    packer = zlib.compressobj(9)
    block = b"0 0 m " * (MIB // 6)
    stream = b"".join(packer.compress(block) for _ in range(megabytes)) + packer.flush()
    return pdf_page_with_stream(stream, filtered=True)


def pdf_slow_text(pages: int = 400, strings: int = 20_000, padding: int = 900_000) -> bytes:
    """Pages that all show one content stream of `strings` strings (inflated from ~5 KB):
    pypdf reads it for each page, tens of microseconds a string, so the parse runs into its
    time budget whatever the machine (about 8 million strings; 50 pages took 14 s here) with
    each page's memory small. `padding` bytes of an unreferenced stream make the file
    ~0.9 MiB: a time budget of about 14 s (docs/documents.md)."""
    stream = zlib.compress(b"BT /F1 12 Tf " + b"(x) Tj " * strings + b"ET", 9)
    font = (
        b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"
    )
    kids = b" ".join(b"%d 0 R" % (4 + k) for k in range(pages))
    return pdf_of(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream),
            *[_PAGE.replace(b"4 0 R", b"3 0 R") % font] * pages,
            b"<< /Length %d >>\nstream\n%s\nendstream" % (padding, b"\0" * padding),
        ]
    )


def pdf_deep_arrays(depth: int = 200_000) -> bytes:
    """A resource dictionary holding an array nested `depth` deep."""
    return pdf_page_with_stream(
        b"BT /F1 12 Tf (x) Tj ET",
        resources=b"/Resources << /X " + b"[" * depth + b"]" * depth + b" >> ",
    )


def pdf_repeated_pages(count: int = 300_000) -> bytes:
    """One page referenced `count` times by the page tree's root."""
    kids = b" ".join([b"3 0 R"] * count)
    return pdf_of(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count),
            _PAGE % b"",
            b"<< /Length 22 >>\nstream\nBT /F1 12 Tf (x) Tj ET\nendstream",
        ]
    )


def pdf_many_pages(nodes: int = 30, per_node: int = 1_000) -> bytes:
    """A page tree of `nodes` nodes of `per_node` kids each, all one page: more pages than a
    document may have."""
    first = 5  # objects 1-4: catalog, root, page, contents; then the nodes
    node_ids = [first + k for k in range(nodes)]
    kids = b" ".join(b"%d 0 R" % n for n in node_ids)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, nodes * per_node),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length 22 >>\nstream\nBT /F1 12 Tf (x) Tj ET\nendstream",
    ]
    node = b"<< /Type /Pages /Parent 2 0 R /Kids [%s] /Count %d >>"
    objects += [node % (b" ".join([b"3 0 R"] * per_node), per_node)] * nodes
    return pdf_of(objects)


def pdf_page_tree_cycle() -> bytes:
    """A page tree whose node lists itself among its kids."""
    return pdf_of(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
            _PAGE % b"",
            b"<< /Length 22 >>\nstream\nBT /F1 12 Tf (x) Tj ET\nendstream",
        ]
    )


def pdf_huge_title() -> bytes:
    return pdf_bytes([["A page."]], title="Title " * 100_000)


def pdf_truncated() -> bytes:
    data = pdf_bytes([["Some text."]] * 3)
    return data[: len(data) // 2]


# --- HTML, Markdown, text ---------------------------------------------------------------------------
def html(body: str) -> bytes:
    return f"<!DOCTYPE html><html><head><title>T</title></head><body>{body}</body></html>".encode()


def html_marked_section() -> bytes:
    """html.parser raises AssertionError on an unknown marked section."""
    return b"<!DOCTYPE html><html><body><p>Hello</p><![foo[ x ]]></body></html>"


def html_nested_svg(depth: int = 50_000) -> bytes:
    """Hidden elements nested deep, then end tags of another hidden element: each end tag
    looked for its element through the whole stack."""
    return html("<svg>" * depth + "</math>" * depth + "<p>after</p>")


def html_unclosed_quotes(count: int = 40_000) -> bytes:
    """A start tag with an unclosed quoted attribute, again and again: html.parser (before
    CPython's 2025 fixes) scans to the end of the page for each."""
    return b"<!DOCTYPE html><html><body>" + b"<a b='" * count  # no '>' to end any of them


def html_deep(depth: int = 50_000) -> bytes:
    return html("<div>" * depth + "deep" + "</div>" * depth)


def html_huge_title() -> bytes:
    return (
        "<!DOCTYPE html><html><head><title>" + "Title " * 200_000 + "</title></head>"
        "<body><h1>" + "Heading " * 100_000 + "</h1><p>Body.</p></body></html>"
    ).encode()


def html_many_headings(count: int = 21_000) -> bytes:
    return html("".join(f"<h{1 + k % 6}>h{k}</h{1 + k % 6}>" for k in range(count)))


def markdown_heading_then_spaces(spaces: int = 100_000) -> bytes:
    """The reviewers' 100 KB Markdown file: a heading line, a long run of spaces and a word; the
    heading pattern backtracked over the spaces (80 s, holding the GIL)."""
    return b"# a" + b" " * spaces + b"b\n\nSome text.\n"


def markdown_setext_paragraph(lines: int = 1_000) -> bytes:
    """A paragraph of many lines underlined as a heading: a title of all of them."""
    return b"intro\n\n" + b"line of a long paragraph\n" * lines + b"===\n\nBody.\n"


def markdown_many_headings(count: int = 21_000) -> bytes:
    return b"".join(b"%s h%d\n" % (b"#" * (1 + k % 6), k) for k in range(count))


def markdown_fences(count: int = 2_000) -> bytes:
    return b"# Fences\n" + b"```\n" * count


def long_line(size: int = 128 * 1024) -> bytes:
    return b"x" * size


def invalid_utf8() -> bytes:
    return "Caf\u00e9 ".encode("latin-1") * 1000


def nul_bytes() -> bytes:
    return b"text\x00" * 1000


def png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\x00" * 1000


def zip_not_docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "not a Word document")
    return out.getvalue()
