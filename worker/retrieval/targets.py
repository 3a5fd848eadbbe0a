"""Which target a search of a table name means, and that target as it is now: one statement
each (the named query search_target), never the whole registry."""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from psycopg import ClientCursor, errors, sql
from psycopg.rows import dict_row

from worker import db, escapes, exceptions, queries
from worker.pipeline.targets import target_of
from worker.retrieval.errors import InvalidSearch
from worker.session_guard import GuardedConnection
from worker.target import Target

# What Postgres raises for a table name that is no name ('"', 'a.b.c.d', 'My App.Notes'), and
# what we raise for one with a part past 63 bytes (sql/15_names.sql: named_in_path()).
NOT_A_NAME = (
    errors.InvalidName,
    errors.SyntaxError,
    errors.FeatureNotSupported,
    errors.NameTooLong,
)

# search_target's targets: load_targets narrowed to the table's (and column's).
_OF_THE_TABLE = sql.SQL(
    "t.source = source.oid"
    " AND (%(column)s::name IS NULL OR t.embedding_column = %(column)s::name)"
    " AND (%(target)s::integer IS NULL OR t.id = %(target)s::integer)"
)


def find_target(
    conn: db.Connection, table: str, column: str | None = None, *, then: str = ""
) -> Target:
    """The target of `table` (of its embedding column `column`, if it has several); `then`
    is added to the hint given for an unwatched table."""
    with db.translated():
        try:
            rows = _search_target(
                conn, {"table": table, "column": column, "target": None, "path": start_path(conn)}
            )
        except NOT_A_NAME as exc:  # not a name at all ('"', 'a.b.c.d', 'My App.Notes')
            raise exceptions.TargetNotFound(
                no_table(conn, table, watched=True, shown=repr(table), error=exc)
            ) from None
    if not rows:
        raise exceptions.TargetNotFound(no_table(conn, table, watched=True, shown=repr(table)))
    found = [row for row in rows if row["id"] is not None]
    if not found:
        raise exceptions.TargetNotFound(not_watched(conn, table, column, then))
    if len(found) > 1:  # the request is incomplete (a 400), not of a table not found
        columns = " or ".join(escapes.shown_literal(row["embedding_column"]) for row in found)
        raise InvalidSearch(f"{table} has several embedding columns: pass a column, {columns}")
    return target_of(found[0])


@dataclass(frozen=True)
class StoreOf:
    """The target whose chunks (or vectors) a chunk (or side) table holds: watch() refuses that
    table, and its rows are the target's, so a command naming it means the target."""

    store: str  # "chunk" or "side"
    target: str  # the target's name
    source: str  # the table whose rows it embeds
    target_id: int | None = None

    def said(self, table: str, then: str) -> str:
        """`table is the chunk table of target T: <then>`."""
        return f"{table} is the {self.store} table of target {self.target}: {then}"

    def instead(self, table: str, verb: str) -> str:
        """What to say to a command that takes only the target's table: `verb` that."""
        held = "chunks" if self.store == "chunk" else "vectors"
        return self.said(
            table, f"{verb} {self.source} instead, the table whose rows its {held} embed"
        )


def table_targets(conn: db.Connection, table: str) -> tuple[str, list[int], StoreOf | None]:
    """`table` as the caller's own sessions find it (its name as Postgres quotes it), the
    ids of its targets, none when it is not watched, and the target whose chunk or side table
    it is, if it is one; ConfigError naming what the caller may have meant when it names no
    table (`failures TABLE`, `status TABLE`)."""
    try:
        row = conn.execute(queries.get("table_targets"), {"table": table}).fetchone()
    except NOT_A_NAME as exc:
        raise exceptions.ConfigError(no_table(conn, table, watched=True, error=exc)) from None
    if row is None or row[0] is None:
        raise exceptions.ConfigError(no_table(conn, table, watched=True))
    return row[0], list(row[1]), StoreOf(*row[2]) if row[2] is not None else None


def not_watched(
    conn: db.Connection, table: str, column: str | None = None, then: str = "", verb: str = "search"
) -> str:
    """What to say of a table found but not watched (with `column`, when given): the columns
    it is watched with, if any, else the watch() to run (`then` after it); to a table watch()
    refuses, what to `verb` (search, plan) instead."""
    if column is not None:
        params = {"table": table, "column": None, "target": None, "path": start_path(conn)}
        with db.translated():
            columns = [r["embedding_column"] for r in _search_target(conn, params) if r["id"]]
        if columns:
            watched = " or ".join(escapes.shown_literal(c) for c in columns)
            are = "columns are" if len(columns) > 1 else "column is"
            return (
                f"{table} is not watched with embedding column {column!r}: its embedding {are}"
                f" {watched}"
            )
    refused = unwatchable(conn, table, verb)
    if refused is not None:
        return refused
    hint = f"SELECT embeddings.watch({escapes.shown_literal(table)}, 'content_column');{then}"
    return f"{table} is not watched: {hint}"


# Relations watch() refuses as "not a table", by pg_class.relkind.
_NOT_TABLES = {
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "S": "a sequence",
    "i": "an index",
    "I": "an index",
    "c": "a composite type",
    "t": "a TOAST table",
}


# Tables watch() refuses for whose they are (unwatched_relation's owned_by), in words.
_OWNED_BY = {
    "ours": "is embed-worker's own table",
    "pgmq": "is pgmq's own table (it holds embed-worker's queues)",
    "catalog": "is a table of the system catalogs",
}


def unwatchable(conn: db.Connection, table: str, verb: str) -> str | None:
    """What to say of `table`, not watched, when watch() would refuse it too: a view or other
    relation that is no table (`verb` the watched tables it reads), a partition of a watched
    table (`verb` that: watching the partition would embed its rows twice), the chunk or side
    table of a target (`verb` the target's table, whose rows its rows are); None for a table
    watch() takes."""
    params = {"table": table, "path": start_path(conn)}
    with db.translated():
        row = conn.execute(queries.get("unwatched_relation"), params).fetchone()
    if row is None:
        return None
    kind, owned_by, store_of, parent, read = row
    whose = _whose(table, verb, owned_by, store_of)
    if whose is not None:
        return whose
    if parent is not None:
        return f"{table} is a partition of {parent}, which is watched: {verb} {parent}"
    if kind not in _NOT_TABLES:
        return None
    said = f"{table} is {_NOT_TABLES[kind]}, which cannot be watched (watch() takes tables)"
    if read:
        tables = "table it reads, " if len(read) == 1 else "tables it reads, "
        return f"{said}: {verb} the watched {tables}{' or '.join(read)}"
    return f"{said}: watch a table it reads, and {verb} that"


def _whose(table: str, verb: str, owned_by: str | None, store_of: Any) -> str | None:
    """What to say of a table watch() refuses for whose it is: ours, pgmq's, the catalogs' (as
    sql/40_watch.sql refuses them), or a target's store."""
    if owned_by is not None:
        said = _OWNED_BY[owned_by]
        return f"{table} {said}: it cannot be watched, and {verb} has nothing to read in it"
    if store_of is not None:
        return StoreOf(*store_of).instead(table, verb)
    return None


def no_table(
    conn: db.Connection,
    table: str,
    *,
    watched: bool,
    shown: str | None = None,
    error: errors.Error | None = None,
) -> str:
    """What to say of `table` (`shown` so) when it names no table: with `error`, the one
    Postgres raised for a name that is none; and the tables the caller may read (`watched`: of
    those watched) it may mean: named so but for case, or in the double quotes it lacks."""
    shown = table if shown is None else shown
    if error is not None:
        hint = _quoting_hint(conn, table, watched=watched)
        return f"no table {shown}: {error.diag.message_primary}{hint}"
    return f"no table {shown}{_alike_hint(conn, table, watched=watched)}"


UNICODE_FORMS = (
    "an accented letter typed decomposed (Unicode NFD) is another name than the same letter"
    " composed (NFC): Postgres compares names by their bytes"
)


def _alike_hint(conn: db.Connection, table: str, *, watched: bool) -> str:
    """For a table not found: the tables the caller may read (`watched`: of those watched)
    named `table` but for case, as the names to give instead (a table made with capitals is
    named in double quotes); "" when there is none."""
    return _did_you_mean(
        conn, [table], watched, "a name not in double quotes is read in lower case"
    )


def _quoting_hint(conn: db.Connection, table: str, *, watched: bool) -> str:
    """For a name Postgres cannot read (`My App.Notes`: a space outside double quotes): the
    tables the caller may read (`watched`: of those watched) that it names in double quotes,
    whole or each dotted part; "" when there is none."""
    if '"' in table:
        return ""
    meant = [f'"{table}"']
    if "." in table:
        meant.append(".".join(f'"{part}"' for part in table.split(".")))
    return _did_you_mean(
        conn,
        meant,
        watched,
        "a name with spaces or other signs than letters, digits and _ is written in double quotes",
    )


def _did_you_mean(conn: db.Connection, names: list[str], watched: bool, why: str) -> str:
    """ "; did you mean A or B? (why)" for the tables tables_alike finds for any of `names`,
    compared NFC-normalized, "" when it finds none; where one found is in another Unicode form
    than the name given (composed, decomposed), that is why."""
    alike: list[str] = []
    for name in names:
        try:
            with db.translated():
                rows = conn.execute(
                    queries.get("tables_alike"),
                    {"table": unicodedata.normalize("NFC", name), "watched": watched},
                ).fetchall()
        except exceptions.DatabaseError:  # not a name parse_ident takes: no hint
            continue
        alike += [found for (found,) in rows if found not in alike]
    if not alike:
        return ""
    composed = unicodedata.is_normalized("NFC", names[0])  # (each of `names` is one name's)
    if any(unicodedata.is_normalized("NFC", found) != composed for found in alike):
        why = UNICODE_FORMS
    return f"; did you mean {' or '.join(alike)}? ({why})"


class KnownTargets:
    """The targets searches found by table name (and column), each checked by one cheap
    statement (search_target_check) before it is used again: the same target, definition
    version, model, full-text search, rerank setting and recorded problem, else read anew.
    Bounded: the names are the callers'."""

    LIMIT = 1024

    def __init__(self) -> None:
        self._known: OrderedDict[tuple[str, str | None], tuple[Any, Target]] = OrderedDict()
        self._lock = threading.Lock()

    def model(self, table: str, column: str | None) -> str | None:
        """The model of the target this name meant last, if any: what to embed with first."""
        with self._lock:
            found = self._known.get((table, column))
        return None if found is None else found[1].model

    def known(self, table: str, column: str | None) -> tuple[Any, Target] | None:
        """What the last check of this name found, and the target it meant: a search may send
        its ranking of that target with the check (check_statement()), in one exchange."""
        with self._lock:
            return self._known.get((table, column))

    def find(
        self, conn: db.Connection, table: str, column: str | None = None, *, then: str = ""
    ) -> Target:
        """find_target(), by one cheap statement while the target is as it was."""
        key = (table, column)
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            check = _check(conn, table, column)
            if check == known[0]:
                return known[1]
        target = find_target(conn, table, column, then=then)
        check = _check(conn, table, column)
        with self._lock:
            self._known[key] = (check, target)
            self._known.move_to_end(key)
            while len(self._known) > self.LIMIT:
                self._known.popitem(last=False)
        return target


def _check(conn: db.Connection, table: str, column: str | None) -> Any:
    with db.translated():
        return conn.execute(*check_statement(conn, table, column)).fetchall()


def check_statement(
    conn: db.Connection, table: str, column: str | None
) -> tuple[str, dict[str, Any]]:
    """The statement KnownTargets checks a target it knows by (its rows: what known() gives
    first), with its parameters, for `conn`."""
    params = {"table": table, "column": column, "path": start_path(conn)}
    return queries.get("search_target_check"), params


def start_path(conn: db.Connection) -> str | None:
    """The search path `conn`'s session started with, where a user's table name is looked
    up; None where the connection did not read it (one of the caller's own): the statement
    reads it then."""
    return conn.start_path if isinstance(conn, GuardedConnection) else None


def current_target(conn: db.Connection, target: Target) -> Target:
    """`target` as registered now (its definition version moves with a model change)."""
    with db.translated():
        rows = _search_target(
            conn, {"table": None, "column": None, "target": target.id, "path": start_path(conn)}
        )
    found = [row for row in rows if row["id"] is not None]
    if not found:
        raise exceptions.TargetError(f"{target.name} is not watched any more")
    return target_of(found[0])


def version_statement(target: Target) -> tuple[str, dict[str, Any]]:
    """The statement that reads `target`'s definition version now (one row; none: gone), with
    its parameters: is_current() sends it, and a search sends it in the ranking's pipeline."""
    return queries.get("search_target_version"), {"target": target.id}


def is_current_version(rows: Any, target: Target) -> bool:
    """Whether version_statement()'s `rows` say `target` is still the registered definition."""
    return bool(rows) and rows[0][0] == target.version


def is_current(conn: db.Connection, target: Target, *, last: bool = False) -> bool:
    """Whether `target` is still the registered definition: one row read. `last`: the
    search's last statement on `conn`, which ran only searches of `target` since its plans
    were dropped; a pooled connection then sends it after DISCARDing its session but the plans
    (kept for `target`'s next searches), in one exchange, and goes back to its pool clean
    (session_guard: discard_session)."""
    query, params = version_statement(target)
    with db.translated():
        if last and isinstance(conn, GuardedConnection) and conn.pooled:
            rows = conn.discard_session(
                then=ClientCursor(conn).mogrify(query, params), keeping_plans_of=target.id
            )
        else:
            rows = conn.execute(query, params).fetchall()
    return is_current_version(rows, target)


def _search_target(conn: db.Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
    query = queries.compose(
        "search_target", targets=queries.compose("load_targets", which=_OF_THE_TABLE)
    )
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()
