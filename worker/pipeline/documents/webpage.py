"""HTML: the visible text, a block per paragraph-like element, and a section per <h1>-<h6>.

The standard library's html.parser reads it: a tolerant tokenizer (unclosed tags, stray end
tags and bad entities do not stop it), which is all that keeping text and headings needs; no
dependency, no C extension. Where a page leaves an element open, it is closed where browsers
close it: a <head> at the first tag or text of the body, a heading at the next block, and a
comment never, so that the rest of the page is in it. What it does not do, on purpose: guess
which parts of a page are boilerplate (navigation, footers), as readability-style extractors
do; a watched table holds the documents a user chose, and dropping a part of them silently
would be worse.
"""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser

from worker.pipeline.documents.extracted import (
    MAX_TITLE,
    ExtractedDocument,
    TextBuilder,
    collapse_spaces,
    headline,
)

# Their content is not text a reader sees.
_HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "math", "head", "iframe"})
# Each ends the block of text before it and starts another.
_BLOCKS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "body", "br", "dd", "details", "dialog"),
        *("div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header"),
        *("hr", "html", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table"),
        *("tbody", "td", "tfoot", "th", "thead", "tr", "ul"),
    }
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
# What a <head> holds. Any other start tag, and any text but spaces, ends a <head> left open
# (the parsing spec's "in head" insertion mode): a page may leave out </head> and <body>.
_HEAD_CONTENT = frozenset(
    {"base", "basefont", "bgsound", "link", "meta", "title", "noscript", "noframes", "style"}
    | {"script", "template", "head", "html"}
)
_SPACES = " \t\n\f\r"  # HTML's whitespace (a no-break space is text)
# Where a comment ends, as browsers read it: html.parser's (3.11) ends it at `-- >` too, and
# reads `<!-->` as the start of a comment running to the next `-->`.
_COMMENT_END = re.compile(r"--!?>")
_EMPTY_COMMENT = re.compile(r"-?>")  # `<!-->`, `<!--->`
# A link inside a heading to the heading itself, put there by a documentation generator (Sphinx
# and MkDocs `headerlink`, GitHub's `anchor`, Docusaurus' `hash-link`, anchor.js) for readers to
# copy: its ¶, #, or zero-width space is not the heading's text. Known by its class or label, or
# by having no letter or digit in it; a heading whose whole text links to itself keeps it.
_PERMALINK_CLASSES = frozenset(
    {"headerlink", "anchor", "hash-link", "anchor-link", "heading-anchor", "header-anchor"}
    | {"permalink", "anchorjs-link", "heading-link", "headinglink"}
)
_PERMALINK_LABELS = ("permalink", "permanent link", "direct link", "link to this")


def extract(html: str, *, max_bytes: int) -> ExtractedDocument:
    parser = _Parser(TextBuilder("html", max_bytes))
    parser.feed(html)
    parser.close()
    return parser.finish()


class _Parser(HTMLParser):
    def __init__(self, builder: TextBuilder) -> None:
        super().__init__(convert_charrefs=True)
        self._builder = builder
        self._hidden: list[str] = []  # the hidden elements we are in
        self._open = Counter[str]()  # how many of each are in `_hidden` (no scan per end tag)
        self._pre = 0  # depth of <pre>: its whitespace is kept
        self._text: list[str] = []  # the current block's text
        self._heading: int | None = None  # the level of the heading we are in
        self._heading_has_text = False  # whether it has any text yet
        self._title: list[str] | None = None  # the <title>'s text, while in it
        self._title_length = 0
        self._title_text: str | None = None
        self._first_h1: str | None = None
        # A link inside the heading we are in: where its text starts in `_text`, and whether it
        # says it is a permalink; None outside one.
        self._link: tuple[int, bool] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._ends_head(tag):
            self._close_hidden("head")
        if tag == "title" and self._title_text is None:
            self._title, self._title_length = [], 0
        elif tag in _HIDDEN:
            self._hidden.append(tag)
            self._open[tag] += 1
        elif tag in _HEADINGS:
            self._end_heading()  # an <h2> in an <h1> left open ends it (the parsing spec does)
            self._flush()
            self._heading, self._heading_has_text = _HEADINGS[tag], False
            self._link = None
        elif tag == "a" and self._heading is not None and not self._hidden:
            self._link = _fragment_link(attrs, len(self._text))
        elif tag in _BLOCKS:
            self._start_block(tag)
            self._pre += tag == "pre"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._ends_head(tag):
            self._close_hidden("head")
        if tag in _BLOCKS:  # <br/>, <hr/>
            self._start_block(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title is not None:
            self._title_text = headline("".join(self._title), MAX_TITLE) or None
            self._title = None
        elif tag in _HIDDEN:
            if self._open[tag]:  # a stray end tag closes nothing
                self._close_hidden(tag)
        elif tag == "a" and self._link is not None:
            start, permalink = self._link
            self._link = None
            if permalink or not any(c.isalnum() for part in self._text[start:] for c in part):
                del self._text[start:]
        elif tag in _HEADINGS:
            self._end_heading()
        elif tag in _BLOCKS:
            self._flush()
            self._pre -= tag == "pre" and self._pre > 0

    def handle_data(self, data: str) -> None:
        if self._title is not None:
            if self._title_length < MAX_TITLE * 8:  # the rest would be cut anyway
                self._title.append(data)
                self._title_length += len(data)
            return
        if self._in_head() and data.strip(_SPACES):
            self._close_hidden("head")
        if not self._hidden:
            self._text.append(data)
            if self._heading is not None and data.strip(_SPACES):
                self._heading_has_text = True

    def parse_comment(self, i: int, report: bool = True) -> int:
        """Where the comment at `i` ends, as browsers end it; -1 while it is not closed."""
        empty = _EMPTY_COMMENT.match(self.rawdata, i + 4)
        if empty:
            return empty.end()
        end = _COMMENT_END.search(self.rawdata, i + 4)
        return -1 if end is None else end.end()

    def close(self) -> None:
        # A comment never closed holds the rest of the page: browsers show none of it.
        # (html.parser of 3.11 made it text, up to its next `>`, and read on.)
        if self.rawdata.startswith("<!--"):
            self.rawdata = ""
        super().close()

    def _in_head(self) -> bool:
        """Whether the element we are in is a <head>, not yet closed."""
        return bool(self._hidden) and self._hidden[-1] == "head"

    def _ends_head(self, tag: str) -> bool:
        """Whether a start tag ends a <head> left open: one of the body's, right in the head;
        a <body>, wherever in it (in a <noscript> or <template> never closed)."""
        if tag == "body":
            return self._open["head"] > 0
        return tag not in _HEAD_CONTENT and self._in_head()

    def _close_hidden(self, tag: str) -> None:
        """Closes the innermost open `tag` and the hidden elements inside it."""
        while True:
            closed = self._hidden.pop()
            self._open[closed] -= 1
            if closed == tag:
                return

    def finish(self) -> ExtractedDocument:
        self._end_heading()
        self._flush()
        self._builder.title = self._title_text or self._first_h1
        return self._builder.build()

    def _start_block(self, tag: str) -> None:
        """A block element starts: the text before it is a block of its own. In a heading that
        has text, it ends the heading (never closed, its text would take the page's); in one
        without, the block is the heading's text (`<h1><div>Title</div></h1>`); a line break in
        a heading is a space."""
        if self._heading is not None:
            if tag == "br":
                self._text.append(" ")
                return
            if not self._heading_has_text or self._hidden:
                return
            self._end_heading()
        self._flush()

    def _end_heading(self) -> None:
        """Ends the heading we are in, if any: its text becomes a heading."""
        if self._heading is None:
            return
        self._link = None
        text = "".join(self._text)
        self._text = []
        if self._heading == 1 and self._first_h1 is None:
            self._first_h1 = headline(text) or None
        self._builder.heading(self._heading, text)
        self._heading = None

    def _flush(self) -> None:
        """Ends the current block: its text becomes a paragraph (a heading's waits its end)."""
        if self._heading is not None:
            return
        text = "".join(self._text)
        self._text = []
        if self._pre:
            self._builder.paragraph(text.strip("\n"))
        else:
            self._builder.paragraph(collapse_spaces(text))


def _fragment_link(attrs: list[tuple[str, str | None]], start: int) -> tuple[int, bool] | None:
    """A link to a place in the page (`href="#..."`), with where its text starts and whether
    its class or label says it is a permalink; None for any other link (its text is text)."""
    found = dict(attrs)
    if not (found.get("href") or "").startswith("#"):
        return None
    classes = set((found.get("class") or "").lower().split())
    label = " ".join(found.get(a) or "" for a in ("title", "aria-label")).lower()
    permalink = (
        bool(classes & _PERMALINK_CLASSES)
        or (found.get("aria-hidden") or "").lower() == "true"
        or any(words in label for words in _PERMALINK_LABELS)
    )
    return start, permalink
