"""The character encoding of a text document's bytes: the one its byte-order mark decides, for any
text format; else, for an HTML page, a <meta charset> (or an http-equiv Content-Type's charset)
within its first 1,024 bytes, found as browsers' prescan finds it (WHATWG HTML, "prescan a byte
stream to determine its encoding"; comments skipped, the first <meta> naming an encoding wins);
else UTF-8. Its bytes are decoded as browsers decode them.

A byte-order mark wins over any <meta> (WHATWG Encoding, "BOM sniff"): EF BB BF is UTF-8, FE FF
UTF-16BE, FF FE UTF-16LE. A <meta> past the first 1,024 bytes declares nothing, in browsers too:
the prescan reads no further. Only the Encoding Standard's encodings are taken, as Python's
codecs: a label browsers do not know (UTF-7, which browsers refuse, or a Python-only codec such
as `unicode_escape`) is no declaration, and the page is read as UTF-8. Where the standard reads a
label as another encoding, so do we: ISO-8859-1, Latin-1 and ASCII as windows-1252 (whose five
unassigned bytes are the C1 controls), Shift_JIS as windows-31J, UTF-16 declared in a page that a
<meta> could be read from as UTF-8."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

PRESCAN = 1024  # bytes: where browsers look for the <meta>

# The Encoding Standard's encodings, as Python names its codecs.
_STANDARD = frozenset(
    {"utf-8", "cp866", "koi8-r", "koi8-u", "mac-roman", "mac-cyrillic", "cp874"}
    | {f"iso8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 10, 13, 14, 15, 16)}
    | {f"cp{n}" for n in range(1250, 1259)}
    | {"gb18030", "big5hkscs", "euc_jp", "iso2022_jp", "cp932", "cp949"}
)
# Codecs the standard decodes as another of its encodings.
_AS_BROWSERS_DO = {
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "utf-16": "utf-8",
    "utf-16-le": "utf-8",
    "utf-16-be": "utf-8",
}
# The standard's labels that Python does not know, for the encodings they name.
_LABELS = {
    "windows-874": "cp874",
    "x-cp1252": "cp1252",
    "windows-31j": "cp932",
    "x-sjis": "cp932",
    "windows-949": "cp949",
    "x-gbk": "gb18030",
    "x-euc-jp": "euc_jp",
    "x-mac-cyrillic": "mac-cyrillic",
    "iso-8859-8-i": "iso8859-8",
    "x-user-defined": "cp1252",
}
_LABEL = re.compile(r"[a-z0-9._:-]{1,40}")

# The prescan's tokens: a comment (`<!-->` and `<!--->` are empty ones; one never closed runs
# to the end), a <meta> and its attributes, or any other tag (a `<` before anything else is not
# one).
_TOKEN = re.compile(
    rb"<!--(?:-?>|.*?-->|.*)|<meta[\t\n\f\r /]([^>]*)|<(?:/?[a-z]|[!?/])[^>]*", re.I | re.S
)
_ATTRIBUTE = re.compile(
    rb"""([^\t\n\f\r />=][^\t\n\f\r /=>]*)"""  # its name, then maybe = and its value
    rb"""(?:[\t\n\f\r ]*=[\t\n\f\r ]*("[^"]*"?|'[^']*'?|[^\t\n\f\r >]*))?"""
)
_CONTENT_CHARSET = re.compile(
    rb"""charset[\t\n\f\r ]*=[\t\n\f\r ]*("[^"]*"|'[^']*'|[^\t\n\f\r ;"']+)""", re.I
)
# windows-1252 as the standard defines it: Python's cp1252 leaves 0x81, 0x8d, 0x8f, 0x90 and
# 0x9d undefined, the standard maps them to the C1 controls of the same number.
_WINDOWS_1252 = "".join(
    bytes([byte]).decode("cp1252", errors="ignore") or chr(byte) for byte in range(256)
)


@dataclass(frozen=True)
class Declared:
    """An encoding a document declares: its label as written, the codec that decodes it, what
    declares it (in a message: "not valid shift_jis (its <meta> charset)"), and how many bytes
    of byte-order mark come before its text."""

    label: str
    codec: str
    by: str = "its <meta> charset"
    mark: int = 0

    def decode(self, data: bytes) -> str:
        """The document's text; UnicodeDecodeError at the first byte its encoding does not map
        (its offset in `data`, the mark included)."""
        body = data[self.mark :]
        try:
            if self.codec == "cp1252":
                return codecs.charmap_decode(body, "strict", _WINDOWS_1252)[0]
            return body.decode(self.codec)
        except UnicodeDecodeError as exc:
            start, end = exc.start + self.mark, exc.end + self.mark
            raise UnicodeDecodeError(exc.encoding, data, start, end, exc.reason) from None


# The byte-order marks, and the encoding each decides.
_MARKS = (
    (codecs.BOM_UTF8, "UTF-8", "utf-8"),
    (codecs.BOM_UTF16_BE, "UTF-16BE", "utf-16-be"),
    (codecs.BOM_UTF16_LE, "UTF-16LE", "utf-16-le"),
)
UTF8 = Declared("UTF-8", "utf-8", "the default")


def marked(data: bytes) -> Declared | None:
    """The encoding the byte-order mark `data` starts with decides; None without one."""
    for mark, label, codec in _MARKS:
        if data.startswith(mark):
            return Declared(label, codec, "its byte-order mark", len(mark))
    return None


def as_utf8(head: bytes) -> bytes:
    """The first bytes of a document as UTF-8, for sniffing its format: UTF-16 (by its mark)
    transcoded, its last character maybe cut and any bad one replaced; a UTF-8 mark dropped."""
    found = marked(head)
    if found is None:
        return head
    if found.codec == "utf-8":
        return head[found.mark :]
    even = head[found.mark : len(head) - (len(head) - found.mark) % 2]
    return even.decode(found.codec, errors="replace").encode()


def declared(data: bytes) -> Declared | None:
    """The encoding the page in `data` declares: its byte-order mark's, else a <meta>'s within
    its first PRESCAN bytes; None when it declares none that browsers would take."""
    found = marked(data)
    if found is not None:
        return found
    for token in _TOKEN.finditer(data[:PRESCAN]):
        if token.group(1) is None:
            continue  # a comment or another tag
        label = _meta_charset(token.group(1))
        codec = None if label is None else _codec(label)
        if label is not None and codec is not None:
            return Declared(label, codec)
    return None


def _meta_charset(attributes: bytes) -> str | None:
    """The charset a <meta>'s attributes name: its `charset`, or an http-equiv Content-Type's
    `content` charset (the first of each attribute counts)."""
    found: dict[bytes, bytes] = {}
    for name, value in _ATTRIBUTE.findall(attributes):
        found.setdefault(name.lower(), _unquoted(value))
    value = found.get(b"charset")
    if value is None:
        if found.get(b"http-equiv", b"").lower() != b"content-type":
            return None
        named = _CONTENT_CHARSET.search(found.get(b"content", b""))
        if named is None:
            return None
        value = _unquoted(named.group(1))
    return value.decode("ascii", errors="replace").strip(" \t\n\f\r")


def _unquoted(value: bytes) -> bytes:
    """An attribute's value without the quotes around it (the closing one may be missing)."""
    if value[:1] in (b'"', b"'"):
        return value[1:].removesuffix(value[:1])
    return value


def _codec(label: str) -> str | None:
    """The codec of an encoding label, as browsers take it; None for one they do not know."""
    label = label.lower()
    if not _LABEL.fullmatch(label):
        return None
    if label in _LABELS:
        return _LABELS[label]
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    name = _AS_BROWSERS_DO.get(name, name)
    return name if name in _STANDARD else None
