"""A search the caller got wrong or may not make, told apart from the database's other errors:
400 and 403 over HTTP, not 500."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from worker import conninfo, db, exceptions

# SQLSTATEs of a search the caller got wrong (a bad comparison, a column type filters do not
# take, a value of the wrong type).
BAD_SEARCH = {"22023", "0A000", "22P02", "22003", "22007", "22008"}
# undefined_column: a bad search only when the error names the caller's column (a filter's,
# sql/58_search.sql: search_filter_sql() says which); one of our own statements' is our fault
# (a store without the column its target says it has): a 500, not the caller's 400.
UNDEFINED_COLUMN = "42703"


class InvalidSearch(exceptions.ConfigError):
    """The search is wrong as asked (its filter, say): a 400."""


class SearchDenied(exceptions.ConfigError):
    """The searching role may not read the table: a 403."""


class TableLocked(exceptions.LockUnavailable):
    """Another session held a lock on the table (an ALTER TABLE, a LOCK TABLE, a VACUUM FULL)
    past the search's lock timeout: a 503 to try again shortly, nobody's mistake."""

    retry_after = 1  # (the 503's Retry-After: a search waits EMBED_LOCK_TIMEOUT_MS at most)


@contextmanager
def search_errors() -> Iterator[None]:
    """The database's errors translated (worker.db), those above raised as themselves."""
    try:
        with db.translated():
            yield
    except exceptions.LockUnavailable as exc:
        raise TableLocked(
            "another session holds a lock on the table for longer than a search waits"
            " (EMBED_LOCK_TIMEOUT_MS); try again shortly"
            f" ({_told(exc).splitlines()[0]})"
        ) from exc
    except exceptions.DatabaseError as exc:
        state = getattr(exc.__cause__, "sqlstate", None)
        if state in BAD_SEARCH or (state == UNDEFINED_COLUMN and _names_a_column(exc)):
            raise InvalidSearch(_told(exc)) from exc
        if db.denied(exc):
            raise SearchDenied(_told(exc)) from exc
        raise


def _names_a_column(exc: exceptions.DatabaseError) -> bool:
    """Whether the error carries a column name field (RAISE ... USING COLUMN): the filter's."""
    diag = getattr(exc.__cause__, "diag", None)
    return bool(diag is not None and diag.column_name)


def _told(exc: exceptions.DatabaseError) -> str:
    """What the caller needs of a search it got wrong: the server's message, detail and hint,
    not its CONTEXT (a stack of our functions' lines, about 1,500 characters)."""
    cause = exc.__cause__
    diag = getattr(cause, "diag", None)
    if diag is None or not diag.message_primary:
        return str(exc)
    parts = [diag.message_primary]
    parts += [
        f"{label}: {text}"
        for label, text in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint))
        if text
    ]
    return conninfo.redact("\n".join(parts))
