"""Which format a document's bytes are in: PDF and DOCX by their signature, HTML and Markdown
by what their text starts with or holds, plain UTF-8 text otherwise. Bytes that are none of
these (another binary format, text that is not UTF-8) are refused here, by name."""

from __future__ import annotations

import io
import re
import zipfile

from worker import exceptions

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


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"unknown document format {format!r}: one of {', '.join(FORMATS)}")
    return format


def detect(data: bytes) -> str:
    """The format of `data`; DocumentError when it is a binary format we do not read."""
    head = data[:_SNIFF]
    if b"%PDF-" in data[:1024]:  # the header may follow some junk (the PDF spec allows it)
        return "pdf"
    if head.startswith(b"PK\x03\x04") and _is_docx(data):
        return "docx"
    for signature, name in _KNOWN_BINARY.items():
        if head.startswith(signature):
            raise exceptions.DocumentError("unknown", f"not a format we read: {name}")
    if b"\x00" in head:
        raise exceptions.DocumentError("unknown", "binary data of a format we do not read")
    body = head.removeprefix(b"\xef\xbb\xbf")
    if _HTML_START.match(body):
        return "html"
    if _MARKDOWN_HEADING.search(body) or _MARKDOWN_OTHER.search(body):
        return "markdown"
    return "text"


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def decode_text(format: str, data: bytes) -> str:
    """UTF-8 text (a byte-order mark dropped); DocumentError naming the first bad byte, or the
    first NUL (valid UTF-8, but no Postgres text can hold it: the chunks could not be stored)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise exceptions.DocumentError(
            format, f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise exceptions.DocumentError(format, f"a NUL byte at offset {nul}: not text")
    return text
