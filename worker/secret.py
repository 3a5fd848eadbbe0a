"""A secret (an API key) as the worker holds it: never shown, checked when read.

Settings (worker/config.py) parses the key variables into it, and the remote models
(worker/models/remote/keys.py) read key files into it: both sides import it from here, so that
neither imports the other.
"""

from __future__ import annotations

import hmac

from worker import exceptions


class Secret:
    """A secret (an API key): its repr and str never show it, so that no log line, exception
    message or status output can carry it by accident. `reveal()` is called where it is sent,
    and nowhere else."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(Secret)  # all alike: a hash must not tell secrets apart either


def checked_key(value: str, where: str) -> Secret:
    """`value` as a key, or a ConfigError naming `where` (a variable, a file) and what is wrong,
    never the key nor any part of it. A key goes into an HTTP header: printable ASCII without
    whitespace, one line. Checked here, when read, so that nothing downstream (http.client
    builds the header and quotes a bad value whole in its error) ever holds a bad one. The
    error is raised outside any except block: no exception holding the key is chained to it."""
    problem = None
    if "\n" in value:
        problem = "holds more than one line (one key, on one line)"
    elif any(not c.isascii() for c in value):
        problem = "holds a character outside printable ASCII (a pasted typographic quote?)"
    elif any(not "!" <= c <= "~" for c in value):
        problem = "holds whitespace or a control character"
    if problem is not None:
        raise exceptions.ConfigError(f"{where}: the key {problem}, so it is not sent")
    return Secret(value)


def one_line(text: str) -> str:
    """A key file's text without its one line ending (a second line stays, to be refused) and
    without blanks around the key."""
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            text = text[: -len(ending)]
            break
    return text.strip(" \t")
