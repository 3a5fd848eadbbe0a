"""The code reinstall's steps around running the files (worker/schema/install.py: reinstall_code).

The schema's *code* is every function, view and composite type of ours in schemas `embeddings`
and `embeddings_internal` (named by our SQL of some release: files.our_names) except the
per-target functions watch() generates (`embeddings_<id>_*`: user tables' triggers use them, and
sql/99_regenerate.sql regenerates them after the files ran); what else is there the user made,
and `kept` keeps it. A database of a release that kept its internals in `embeddings`
(before 0.4.0) loses them here, and the files create them in `embeddings_internal`: that is
how an upgrade moves them. Dropping the code also drops what
only we hang on it: the notification trigger on each pgmq queue table and our event triggers,
which the files and 99_regenerate.sql create again. Anything else that depends on the code (a
view of the user's over embeddings.status, say) would be lost, so the reinstall refuses first.
What others were granted or denied on the code is kept by `privileges`.
"""

from __future__ import annotations

import logging

from worker import exceptions
from worker.db import Connection
from worker.schema import files

logger = logging.getLogger(__name__)

# The code: functions (by regprocedure), views (and their row types) and composite types (the
# functions' own, such as watch()'s options) of schemas embeddings and embeddings_internal whose
# names our SQL of some release gives (`%(ours)s`: files.our_names); what else of these kinds is
# there, the user made, and `kept` keeps it.
_CODE = """
    SELECT 'pg_proc'::regclass AS classid, p.oid AS objid FROM pg_proc p
    WHERE p.pronamespace IN (to_regnamespace('embeddings'), to_regnamespace('embeddings_internal'))
      AND p.proname !~ '^embeddings_[0-9]+_' AND p.proname = ANY (%(ours)s)
    UNION ALL
    SELECT 'pg_class'::regclass, c.oid FROM pg_class c
    WHERE c.relnamespace IN (to_regnamespace('embeddings'), to_regnamespace('embeddings_internal'))
      AND c.relkind IN ('v', 'm', 'c') AND c.relname = ANY (%(ours)s)
    UNION ALL
    SELECT 'pg_type'::regclass, c.reltype FROM pg_class c
    WHERE c.relnamespace IN (to_regnamespace('embeddings'), to_regnamespace('embeddings_internal'))
      AND c.relkind IN ('v', 'm', 'c') AND c.relname = ANY (%(ours)s)
"""

# Objects that depend on the code and are neither part of it nor ours to drop with it: a view's
# rewrite rule belongs to the view; the queues' notification triggers and our event triggers
# are created again.
_FOREIGN_DEPENDENTS = f"""
WITH code AS ({_CODE})
SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid),
                pg_describe_object(d.refclassid, d.refobjid, 0)
FROM pg_depend d
JOIN code c ON c.classid = d.refclassid AND c.objid = d.refobjid
WHERE d.deptype IN ('n', 'a')
  AND (d.classid, d.objid) NOT IN (SELECT classid, objid FROM code)
  AND NOT (d.classid = 'pg_rewrite'::regclass AND EXISTS (
      SELECT FROM pg_rewrite r
      JOIN code v ON v.classid = 'pg_class'::regclass AND v.objid = r.ev_class
      WHERE r.oid = d.objid))
  AND NOT (d.classid = 'pg_trigger'::regclass AND EXISTS (
      SELECT FROM pg_trigger g JOIN pg_class q ON q.oid = g.tgrelid
      WHERE g.oid = d.objid AND g.tgname = 'embeddings_notify_workers'
        AND q.relnamespace = to_regnamespace('pgmq')))
  AND NOT (d.classid = 'pg_event_trigger'::regclass AND EXISTS (
      SELECT FROM pg_event_trigger e WHERE e.oid = d.objid AND e.evtname LIKE 'embeddings\\_%%'))
ORDER BY 1, 2
"""

# What the drop takes with it: the notification triggers that releases before 0.2.0 put on
# pgmq's queue tables (0.2.0 has none: workers look for jobs, sql/20_queue.sql), our event
# triggers (the files and sql/99_regenerate.sql create them again), then views, then functions,
# then the composite types the functions took.
_DROPS = f"""
WITH code AS ({_CODE})
SELECT format('DROP TRIGGER %%I ON %%s', g.tgname, g.tgrelid::regclass)
FROM pg_trigger g JOIN code c ON c.classid = 'pg_proc'::regclass AND c.objid = g.tgfoid
WHERE g.tgname = 'embeddings_notify_workers'
UNION ALL
SELECT format('DROP EVENT TRIGGER %%I', e.evtname)
FROM pg_event_trigger e JOIN code c ON c.classid = 'pg_proc'::regclass AND c.objid = e.evtfoid
UNION ALL
SELECT 'DROP VIEW ' || string_agg(c.oid::regclass::text, ', ')
FROM pg_class c
WHERE c.oid IN (SELECT objid FROM code WHERE classid = 'pg_class'::regclass)
  AND c.relkind IN ('v', 'm')
HAVING count(*) > 0
UNION ALL
SELECT 'DROP FUNCTION ' || string_agg(p.oid::regprocedure::text, ', ')
FROM pg_proc p WHERE p.oid IN (SELECT objid FROM code WHERE classid = 'pg_proc'::regclass)
HAVING count(*) > 0
UNION ALL
SELECT 'DROP TYPE ' || string_agg(c.reltype::regtype::text, ', ')
FROM pg_class c
WHERE c.oid IN (SELECT objid FROM code WHERE classid = 'pg_class'::regclass)
  AND c.relkind = 'c'
HAVING count(*) > 0
"""

_EVENT_TRIGGERS_NOT_OURS_TO_DROP = """
SELECT e.evtname, e.evtowner::regrole::text FROM pg_event_trigger e
WHERE e.evtname LIKE 'embeddings\\_%'
  AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
  AND e.evtowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
ORDER BY 1
"""


# What a reinstall locks until the migration's COMMIT (one transaction: an upgrade is all or
# nothing), measured with a margin (tests/migration/test_reinstall.py keeps them
# honest): the code itself, and each watched table whose functions and triggers
# sql/99_regenerate.sql makes again.
CODE_LOCKS = 1000
LOCKS_PER_TARGET = 40  # a plain table 28; a partitioned or chunked one more

# The watched tables the reinstall regenerates, and the server's lock table: Postgres has room
# for max_locks_per_transaction times the processes it may run (its NLOCKENTS).
_LOCK_ROOM = """
    SELECT (SELECT count(*) FROM embeddings.targets t
            WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = t.source)),
           current_setting('max_locks_per_transaction')::integer,
           current_setting('max_connections')::integer
             + current_setting('autovacuum_max_workers')::integer + 1
             + current_setting('max_worker_processes')::integer
             + current_setting('max_wal_senders')::integer
             + current_setting('max_prepared_transactions')::integer
"""


def lock_shortage(targets: int, per_transaction: int, processes: int) -> str | None:
    """Why a reinstall regenerating `targets` watched tables would run out of the server's lock
    table, and the setting that gives it room; None when it fits."""
    needed = CODE_LOCKS + LOCKS_PER_TARGET * targets
    room = per_transaction * processes
    if needed <= room:
        return None
    enough = 64
    while enough * processes < needed:
        enough *= 2
    return (
        f"cannot upgrade the embeddings schema here: it regenerates the triggers and functions of "
        f"the {targets:,} watched tables in one transaction, which holds about {needed:,} locks "
        f"until it commits, and this server's lock table holds {room:,} "
        f"(max_locks_per_transaction {per_transaction} x {processes} server processes): Postgres "
        f"would fail it with 'out of shared memory'. Set max_locks_per_transaction = {enough} "
        "(ALTER SYSTEM SET, then restart PostgreSQL) and migrate again; nothing was changed"
    )


def refuse_short_lock_table(conn: Connection) -> None:
    """Raises EmbedWorkerError before anything is dropped when the server's lock table cannot
    hold the reinstall's locks: the failure would come minutes in (1,000 tables), as 'out of
    shared memory', with no word of what to raise."""
    if not _installed(conn) or conn.execute(
        "SELECT to_regclass('embeddings.targets') IS NULL"
    ).fetchone() == (True,):
        return
    row = conn.execute(_LOCK_ROOM).fetchone()
    assert row is not None
    shortage = lock_shortage(*row)
    if shortage is not None:
        raise exceptions.EmbedWorkerError(shortage)


def _installed(conn: Connection) -> bool:
    row = conn.execute("SELECT to_regnamespace('embeddings') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _ours() -> dict[str, list[str]]:
    return {"ours": sorted(files.our_names())}


def refuse_foreign_dependents(conn: Connection) -> None:
    """Raises EmbedWorkerError, naming them, when objects that are not ours depend on the code
    (they would be dropped with it), or when our event triggers belong to a role the caller
    cannot drop them as."""
    if not _installed(conn):
        return
    dependents = conn.execute(_FOREIGN_DEPENDENTS, _ours()).fetchall()
    if dependents:
        listed = "\n".join(f"  {dependent} (uses {ours})" for dependent, ours in dependents)
        raise exceptions.EmbedWorkerError(
            "cannot upgrade the embeddings schema: migrating replaces its functions and views, "
            f"and these objects depend on them:\n{listed}\n"
            "Drop them, migrate, then create them again (psql's \\sv and \\sf print their "
            "definitions); or make them call ours from PL/pgSQL, whose bodies Postgres does "
            "not track as dependencies."
        )
    owned = conn.execute(_EVENT_TRIGGERS_NOT_OURS_TO_DROP).fetchall()
    if owned:
        names = ", ".join(f"{name} (owned by {owner})" for name, owner in owned)
        raise exceptions.EmbedWorkerError(
            f"cannot upgrade the embeddings schema: its event triggers {names} must be dropped "
            "and created again, which only their owner or a superuser may do: run "
            "`embed-worker migrate` as a superuser"
        )


def drop_code(conn: Connection) -> None:
    """Drops the code and what hangs on it only (refuse_foreign_dependents ran first: without
    CASCADE, anything it missed makes the drop fail instead of going with it)."""
    if not _installed(conn):
        return
    for (statement,) in conn.execute(_DROPS, _ours()).fetchall():
        logger.debug("%s", statement[:200])
        conn.execute(statement)
