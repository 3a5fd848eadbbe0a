"""Which format a document's bytes are in: PDF and DOCX by their signature, HTML and Markdown
by what their text starts with or holds, plain UTF-8 text otherwise. Bytes that are none of
these (another binary format, text that is not UTF-8) are refused here, by name; so are bytes
that are not the format a target declares (a PNG in a column of PDFs), saying what they are."""

from __future__ import annotations

import io
import re
import zipfile

from worker import exceptions
from worker.pipeline.documents import charsets

FORMATS = ("pdf", "docx", "html", "markdown", "text")

# How far into a document its signature or tell-tale markup is looked for.
_SNIFF = 4096

_HTML_START = re.compile(
    rb"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|title|meta"
    rb"|h[1-6]|p|div|article|section|main|table|ul|ol)[\s>/]",
    re.I | re.S,
)
_MARKDOWN_HEADING = re.compile(rb"^ {0,3}(?:#{1,6}[ \t]+\S|\S[^\n]*\n {0,3}(?:=+|-+)[ \t]*$)", re.M)
_MARKDOWN_OTHER = re.compile(rb"^ {0,3}(?:```|~~~)|\[[^\]\n]+\]\([^)\s]+\)", re.M)
# Signatures of binary formats we do not read, for a message that says which it is.
_KNOWN_BINARY = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\xd0\xcf\x11\xe0": "an OLE2 file (an old .doc/.xls?)",
    b"\x1f\x8b": "a gzip archive",
    b"PK\x03\x04": "a zip archive that is not a DOCX (no word/document.xml)",
}
_BINARY = "binary data of a format we do not read"
# What bytes of each format are, in a message ("it is an HTML page")...
_WHAT = {
    "pdf": "a PDF",
    "docx": "a DOCX document",
    "html": "an HTML page",
    "markdown": "Markdown text",
    "text": "text",
}
# ...and what bytes declared a format are not ("not HTML").
_NAMES = {"pdf": "a PDF", "docx": "a DOCX document", "html": "HTML", "markdown": "Markdown"}


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"unknown document format {format!r}: one of {', '.join(FORMATS)}")
    return format


def detect(data: bytes) -> str:
    """The format of `data`; DocumentError when it is a binary format we do not read."""
    head = data[:_SNIFF]
    if _is_pdf(data):
        return "pdf"
    if head.startswith(b"PK\x03\x04") and _is_docx(data):
        return "docx"
    known = _known_binary(head)
    if known is not None:
        raise exceptions.DocumentError("unknown", f"not a format we read: {known}")
    body = charsets.as_utf8(head)
    if b"\x00" in body:  # (not in UTF-16 bytes: in the text they are)
        raise exceptions.DocumentError("unknown", _BINARY)
    if _HTML_START.match(body):
        return "html"
    if _MARKDOWN_HEADING.search(body) or _MARKDOWN_OTHER.search(body):
        return "markdown"
    return "text"


def check_declared(format: str, data: bytes) -> None:
    """DocumentError when bytes declared a PDF or a DOCX (watch()'s `format`) are not one,
    saying what they are: a PNG in a column of PDFs is "not a PDF (it is a PNG image)", not the
    error pypdf raises reading it as one."""
    signed = {"pdf": _is_pdf, "docx": _is_docx}.get(format)
    if signed is not None and not signed(data):
        raise exceptions.DocumentError(format, f"not {_NAMES[format]} (it is {describe(data)})")


def describe(data: bytes) -> str:
    """What `data` is, as a message says it: "a PNG image", "an HTML page", "text"..."""
    if not data:
        return "empty"
    try:
        return _WHAT[detect(data)]
    except exceptions.DocumentError:
        return _known_binary(data[:_SNIFF]) or _BINARY


def _is_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:1024]  # the header may follow some junk (the PDF spec allows it)


def _known_binary(head: bytes) -> str | None:
    """The binary format we do not read that `head` starts with, by name."""
    for signature, name in _KNOWN_BINARY.items():
        if head.startswith(signature):
            return name
    return None


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def decode_text(format: str, data: bytes) -> str:
    """The text of a document's bytes, in the encoding its byte-order mark decides (UTF-8 or
    UTF-16, whatever the format), else an HTML page's <meta> declares (charsets.py), else UTF-8;
    DocumentError naming the first bad byte, or the first NUL (valid, but no Postgres text can
    hold it: the chunks could not be stored), or the binary format the bytes are in (a PDF in a
    column of Markdown)."""
    declared = charsets.declared(data) if format == "html" else charsets.marked(data)
    encoding = declared or charsets.UTF8
    try:
        text = encoding.decode(data)
    except UnicodeDecodeError as exc:
        said = encoding.label if encoding.codec == "utf-8" else f"{encoding.label} ({encoding.by})"
        reason = f"not valid {said}: {_bad_bytes(encoding, data, exc)} at offset {exc.start}"
        raise exceptions.DocumentError(format, _binary_reason(format, data) or reason) from None
    nul = text.find("\x00")
    if nul >= 0:
        if encoding.codec.startswith("utf-16"):  # two bytes of it
            unit, at = "character", encoding.mark + len(text[:nul].encode(encoding.codec))
        else:  # (every other encoding here is a superset of ASCII: its NUL is the byte 0)
            unit, at = "byte", data.find(b"\x00")
        reason = f"a NUL {unit} at offset {at}: not text"
        raise exceptions.DocumentError(format, _binary_reason(format, data) or reason)
    return text


def _bad_bytes(encoding: charsets.Declared, data: bytes, exc: UnicodeDecodeError) -> str:
    """The bytes a decoding stopped at: the byte, or UTF-16's code unit (a lone surrogate) or
    last odd byte."""
    if not encoding.codec.startswith("utf-16"):
        return f"byte 0x{data[exc.start]:02x}"
    unit = data[exc.start : min(exc.end, exc.start + 2)]
    return ("bytes " if len(unit) > 1 else "byte ") + " ".join(f"0x{b:02x}" for b in unit)


def _binary_reason(format: str, data: bytes) -> str | None:
    """Why bytes declared a text format are not: the binary format they are in, if known."""
    head = data[:_SNIFF]
    if _is_pdf(data) or head.startswith(b"PK\x03\x04") or _known_binary(head) is not None:
        return f"not {_NAMES.get(format, format)} (it is {describe(data)})"
    return None
