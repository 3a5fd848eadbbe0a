"""`embed-worker doctor`: checks the common problems and says what to do about each.

Each check prints `ok`, `warn` or `FAIL` with one line of detail and, for the last two, the fix.
The exit code is 1 when any check fails, so scripts and CI can gate on it.
"""

from __future__ import annotations

import shlex

import psycopg

from worker import conninfo, db, escapes, exceptions, exits, queries, schema
from worker.cli import (
    hints,
    model_findings,
    output,
    pooler,
    push_findings,
    remote,
    replication,
    restored,
    search_access,
    search_fulltext,
    search_memory,
    verification,
)
from worker.cli.extension_findings import pgmq_finding, vector_finding
from worker.cli.findings import Finding
from worker.config import Settings

BACKLOG_SECONDS = 300.0  # a job older than this, with no rate to drain it, is a backlog


def run(dsn: str, settings: Settings) -> int:
    findings = check(dsn, settings)
    lines = []
    for f in findings:
        # A server's message may run on several lines ("...\n\tIs the server running"): each
        # its own line, rather than shown escaped as \n\t within one.
        first, *more = f.detail.splitlines() or [""]
        lines.append(f"{f.level:<4}  {f.check}: {first}")
        lines.extend(f"      {line.strip()}" for line in more if line.strip())
        if f.fix:
            lines.append(f"      fix: {f.fix}")
    output.print_lines(lines)
    failed = sum(f.level == "FAIL" for f in findings)
    warned = sum(f.level == "warn" for f in findings)
    print(f"\n{failed} problem(s), {warned} warning(s)")
    return exits.FAILURE if failed else exits.OK


def check(dsn: str, settings: Settings) -> list[Finding]:
    try:
        conn = db.connect(
            dsn,
            connect_timeout=5,
            lock_timeout_ms=settings.lock_timeout_ms,
            per_transaction=settings.per_transaction,
        )
    except exceptions.AuthenticationFailed as exc:
        return [Finding("FAIL", "database", str(exc), "check the password, then run doctor again")]
    except exceptions.UnusableEncoding as exc:
        return [Finding("FAIL", "database", exc.problem, exc.fix)]
    except exceptions.EmbedWorkerError as exc:
        return [Finding("FAIL", "database", str(exc), _connect_fix(str(exc), dsn, settings))]
    with conn, db.translated():
        found = [_database(conn, dsn)]
        found += pooler.findings(conn, dsn, settings)
        found += _extensions(conn)
        installed = _schema(conn, dsn, found)
        if installed:
            found += _targets(conn, dsn, settings)
            found += replication.findings(conn)
            found += search_access.findings(conn, settings)
            found += search_fulltext.findings(conn)
            found += search_memory.findings(conn)
            found += push_findings.findings(conn)
            if _can_read(conn, "embeddings.targets"):
                found += restored.strays(conn)
                if _can_read(conn, "embeddings.made_tables"):
                    found += restored.stores_without_policy(conn)
        found += _cron(conn, dsn)
    return found


def _connect_fix(error: str, dsn: str, settings: Settings) -> str:
    """What to do when the database cannot be reached: the variable is set only when it is
    not (nor PG*), the database made when it is missing, else the server looked at."""
    if not settings.database_url and not conninfo.uses_pg_environment():
        return (
            "set DATABASE_URL (or --database-url): unset, with no PG* variables, the local "
            f"`make db` cluster is tried ({conninfo.describe(dsn)})"
        )
    if "does not exist" in error and "database" in error:
        return "create the database (CREATE DATABASE), or name an existing one in DATABASE_URL"
    if error.startswith("invalid DATABASE_URL"):
        return "correct DATABASE_URL (a postgresql:// URL or a libpq conninfo)"
    return (
        f"check that the server at {conninfo.describe(dsn)} runs and accepts connections from here "
        "(the host and port in DATABASE_URL, listen_addresses, pg_hba.conf, a firewall)"
    )


def _database(conn: db.Connection, dsn: str) -> Finding:
    read_only = db.takes_no_writes(conn)
    if read_only is None:
        return Finding("ok", "database", f"connected to {conninfo.describe(dsn)}")
    why, fix = read_only
    detail = f"{conninfo.describe(dsn)} takes no writes: {why}; the worker waits until it does"
    return Finding("FAIL", "database", detail, fix)


def _extensions(conn: db.Connection) -> list[Finding]:
    have = dict(conn.execute(queries.get("installed_extensions")).fetchall())
    offered = dict(conn.execute(queries.get("offered_extensions")).fetchall())
    pgmq_schema = conn.execute(queries.get("pgmq_schema_exists")).fetchone()
    return [
        vector_finding(have.get("vector"), offered.get("vector")),
        pgmq_finding(have.get("pgmq"), offered.get("pgmq"), bool(pgmq_schema and pgmq_schema[0])),
    ]


def _schema(conn: db.Connection, dsn: str, found: list[Finding]) -> bool:
    renamed = restored.renamed_schemas(conn)
    if renamed:
        found += renamed
        return False
    if not schema.installed(conn):
        found.append(
            Finding(
                "FAIL",
                "schema",
                "the embeddings schema is not installed",
                f"`{hints.command('migrate', dsn)}`",
            )
        )
        return False
    unrecorded = restored.unrecorded(conn)  # what `migrate` would refuse with, said here
    if unrecorded is not None:
        found.append(unrecorded)
        return False
    # Of this package's release, as `run` and the other commands check it: the checks below
    # call what an older schema lacks (raw SQL errors), and a newer one is a later release's.
    mismatch = schema.mismatch(conn, migrate=hints.command("migrate", dsn))
    if mismatch is not None:
        found.append(Finding("FAIL", "schema", mismatch.found, mismatch.fix))
        return False
    found.append(Finding("ok", "schema", "the embeddings schema is installed"))
    return True


def _targets(conn: db.Connection, dsn: str, settings: Settings) -> list[Finding]:
    from worker import status

    out: list[Finding] = []
    role = conn.execute(queries.get("current_role")).fetchone()
    who = role[0] if role else "this role"
    try:
        with conn.transaction():
            rows = status.fetch(conn)
    except (psycopg.Error, exceptions.DatabaseError) as exc:
        rows = []
        out.append(
            Finding(
                "FAIL",
                "status",
                f"cannot read embeddings.status as {who}: {exc}",
                _grant_worker_fix(who),
            )
        )
    dims = dict(
        conn.execute(queries.get("model_dimensions")).fetchall()
        if _can_read(conn, "embeddings.models")
        else []
    )
    out += model_findings.findings(conn, settings, _can_read(conn, "embeddings.models"))
    out += remote.reranker_findings(conn, settings)  # registered ones, and those tables name
    targets = conn.execute(queries.get("target_grants")).fetchall()
    for name, model, typmod, can_run, can_queue, can_fail in targets:
        if model in dims and typmod > 0 and typmod != dims[model]:
            out.append(
                Finding(
                    "FAIL",
                    f"dimensions {name}",
                    f"the column holds {typmod} dimensions, model {model!r} produces {dims[model]}",
                    f"re-watch with a {typmod}-dimensional model, or alter the column to "
                    f"halfvec({dims[model]})",
                )
            )
        missing = [
            what
            for what, ok in (
                # (None: it has none, its problem, reported below, says why)
                ("EXECUTE on the functions of its target", can_run is not False),
                ("USAGE on schema pgmq and SELECT/UPDATE/DELETE on the queue", can_queue),
                ("INSERT on embeddings.failures", can_fail),
            )
            if not ok
        ]
        if missing:
            out.append(
                Finding(
                    "FAIL",
                    f"grants {name}",
                    f"role {who} lacks {', '.join(missing)}",
                    _grant_worker_fix(who),
                )
            )
    readable_targets = _can_read(conn, "embeddings.targets")
    tables = dict(conn.execute(queries.get("target_tables")).fetchall()) if readable_targets else {}
    out += _queue(rows, dsn, tables)
    if rows:
        out.append(verification.finding(conn, rows, settings.verify_max_age_seconds, dsn))
    return out


def _can_read(conn: db.Connection, table: str) -> bool:
    row = conn.execute(queries.get("can_read_table"), {"table": table}).fetchone()
    return bool(row and row[0])


def _queue(rows: list[dict[str, object]], dsn: str, tables: dict[int, str]) -> list[Finding]:
    """Each target's stops, backlog and dead letters; `tables`: each target's table, by id."""
    out = []
    for r in rows:
        name = str(r["target"])
        pending = int(str(r["pending_jobs"]))
        oldest = r["oldest_pending_seconds"]
        # What stops its progress (sql/52_stopped.sql), as status and /readyz show it: one
        # problem each.
        stops: list[dict[str, str]] = r.get("stopped") or []  # type: ignore[assignment]
        for stop in stops:
            out.append(
                Finding(
                    "FAIL",
                    f"target {name}",
                    f"stopped ({stop['state']}): {stop['reason']}",
                    stop["fix"],
                )
            )
        if r["deferred_reason"] and not any(s["state"] == "held" for s in stops):
            out.append(
                Finding(
                    "FAIL",
                    f"queue {name}",
                    f"{pending} job(s) held (not attempted, not failed): {r['deferred_reason']}",
                    "fix the cause above; the worker tries the held jobs again every minute",
                )
            )
        elif (
            pending
            and isinstance(oldest, float)
            and oldest > BACKLOG_SECONDS
            # Held or unservable: its jobs wait for the fix its stop names, whatever runs (a
            # held one's deferral says a worker ran): no backlog to ask about workers for.
            and not any(s["state"] in ("held", "problem") for s in stops)
        ):
            rate = float(str(r["rows_per_second"]))
            out.append(
                Finding(
                    "FAIL" if rate == 0 else "warn",
                    f"queue {name}",
                    f"{pending} job(s) pending, the oldest for {output.age(oldest)}, "
                    f"recent rate {rate:.1f}/s",
                    f"is a worker running? `{hints.command('run', dsn)}`; if it is, add workers"
                    " or EMBED_THREADS",
                )
            )
        unqueued = r.get("unqueued_rows")
        if isinstance(unqueued, int) and unqueued > 0:
            out.append(
                Finding(
                    "warn",
                    f"queue {name}",
                    f"{'~' if r['estimated'] else ''}{unqueued:,} row(s) have content but no"
                    " vector, and no job waits for them (a logical-replication subscriber"
                    " watched without replica => true, or the table's triggers disabled)",
                    f"`{hints.command('sweep', dsn)}` until it queues nothing",
                )
            )
        failed = int(str(r["failed_jobs"]))
        if failed:
            table = tables.get(int(str(r["target_id"])))  # that table's alone, where known
            chosen = f"failures {shlex.quote(table)}" if table else "failures"
            out.append(
                Finding(
                    "FAIL",
                    f"dead letters {name}",
                    f"{failed} job(s) exhausted their attempts",
                    f"read why with `{hints.command(chosen, dsn)}`, fix the cause, then "
                    f"`{hints.command(f'{chosen} --retry', dsn)}`",
                )
            )
    if not rows:
        out.append(
            Finding("warn", "targets", "no watched tables yet", "SELECT embeddings.watch(...)")
        )
    return out


def _cron(conn: db.Connection, dsn: str) -> list[Finding]:
    available = conn.execute(queries.get("pg_cron_available")).fetchone()
    if not available or not available[0]:
        return [Finding("ok", "pg_cron", "not available on this server (optional)")]
    try:
        with conn.transaction():
            preload = conn.execute(queries.get("preload_libraries")).fetchone()
    except psycopg.Error:
        return [Finding("ok", "pg_cron", "this role cannot read shared_preload_libraries")]
    if preload and "pg_cron" in preload[0]:
        here = conn.execute(queries.get("pg_cron_here")).fetchone()
        names = conn.execute(queries.get("cron_database")).fetchone()
        assert here is not None and names is not None
        return [cron_finding(here=here[0], cron_database=names[0], database=names[1], dsn=dsn)]
    return [
        Finding(
            "warn",
            "pg_cron",
            "installed on the server but not in shared_preload_libraries: embeddings.sweep() "
            "cannot be scheduled",
            "add pg_cron to shared_preload_libraries (and cron.database_name), restart Postgres, "
            "then `embed-worker migrate`",
        )
    ]


def cron_finding(*, here: bool, cron_database: str | None, database: str, dsn: str) -> Finding:
    """pg_cron, preloaded: it runs jobs in one database only (cron.database_name), where
    schedule_sweep() works; in any other, it fails ("pg_cron is not installed in this
    database"), so the sweep is scheduled from there or by another scheduler."""
    if here:
        return Finding("ok", "pg_cron", "preloaded, installed in this database")
    if cron_database in (None, database):
        return Finding(
            "ok", "pg_cron", "preloaded; `embed-worker migrate` creates the extension here"
        )
    # (ok: pg_cron is optional, and the verification check warns when no sweep verifies)
    return Finding(
        "ok",
        "pg_cron",
        f"preloaded, but it runs jobs in database {cron_database} only (cron.database_name), "
        f"not in {database}: embeddings.schedule_sweep() cannot schedule here",
        f"run `{hints.command('sweep', dsn)}` from your scheduler, or from database "
        f"{cron_database}: SELECT cron.schedule_in_database('embeddings-sweep', '* * * * *', "
        f"'SELECT embeddings.sweep()', {escapes.shown_literal(database)});",
    )


def _grant_worker_fix(who: str) -> str:
    return f"as the table owner: SELECT embeddings.grant_worker({escapes.shown_literal(who)});"
