"""The context header embedded in front of a chunk: the document's title and the chunk's heading
path, by a template the user sets. "It takes 14 days." means nothing alone; under "Help
centre / Refunds" it answers "how long does a refund take". Only the embedding input has the
header: the chunk stored is the document's text as it is."""

from __future__ import annotations

import string
from dataclasses import dataclass

from worker import exceptions
from worker.pipeline.documents.extracted import Headings

DEFAULT_TEMPLATE = "{title}\n{headings}\n\n"
DEFAULT_SEPARATOR = " > "
PLACEHOLDERS = ("title", "headings")


@dataclass(frozen=True)
class HeaderTemplate:
    """A checked template: `{title}` and `{headings}` (the heading path joined by `separator`)
    are its only placeholders, without conversions or format specs; `{{` and `}}` are braces."""

    template: str = DEFAULT_TEMPLATE
    separator: str = DEFAULT_SEPARATOR

    def __post_init__(self) -> None:
        try:
            fields = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            raise exceptions.ConfigError(
                f"context header template {self.template!r}: {exc} (write a brace as {{{{ or }}}})"
            ) from None
        for _, name, spec, conversion in fields:
            if name is None:
                continue
            if name not in PLACEHOLDERS:
                shown = "{" + name + "}" if name else "{} (a placeholder needs a name)"
                raise exceptions.ConfigError(
                    f"context header template {self.template!r}: unknown placeholder {shown}; "
                    "the placeholders are {title} and {headings}"
                )
            if spec or conversion:
                raise exceptions.ConfigError(
                    f"context header template {self.template!r}: {{{name}}} takes no "
                    "conversion or format spec"
                )

    def render(self, title: str | None, headings: Headings) -> str:
        """The header; empty when the document has neither title nor headings (a plain text's
        chunks are embedded as they are). A path that starts with the title (a Markdown
        document's first `# heading`) does not repeat it."""
        if headings and headings[0] == title:
            headings = headings[1:]
        if not title and not headings:
            return ""
        return self.template.format(title=title or "", headings=self.separator.join(headings))
