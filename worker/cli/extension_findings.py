"""doctor's extension checks: pgvector (halfvec, and the HNSW vacuum race of versions before
0.8.3) and pgmq, from the versions this database has and the server offers."""

from __future__ import annotations

from worker.cli.findings import Finding

MIN_VECTOR = (0, 7)  # halfvec
# pgvector's CHANGELOG, 0.8.3: "Fixed possible index corruption with HNSW vacuuming": a VACUUM
# concurrent with inserts (our writes) could leave a dangling edge, and later VACUUMs and scans
# fail "different halfvec dimensions 384 and 0" (pgvector pull request 988).
HNSW_VACUUM_FIXED = (0, 8, 3)
MIN_PGMQ = (1, 4)  # pgmq.format_table_name, read_with_poll


def _version(text: str | None) -> tuple[int, ...]:
    parts = []
    for part in (text or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def vector_finding(installed: str | None, offered: str | None) -> Finding:
    """pgvector, from the version in this database and the one the server offers: `migrate`
    creates the extension when the server has a version with halfvec; only a server without
    one needs pgvector installed on it. A server whose pgvector has the HNSW vacuum race is
    warned of: the server's library is the one that runs (the version its control file offers),
    whatever version this database's extension was created at."""
    if installed is not None and _version(installed) >= MIN_VECTOR:
        return _with_race(Finding("ok", "pgvector", f"version {installed}"), offered or installed)
    if installed is not None:
        fix = "ALTER EXTENSION vector UPDATE (pgvector >= 0.7 on the server)"
        return Finding("FAIL", "pgvector", f"version {installed} has no halfvec", fix)
    if offered is not None and _version(offered) >= MIN_VECTOR:
        found = Finding(
            "ok",
            "pgvector",
            f"version {offered} available on the server; `embed-worker migrate` creates the "
            "extension in this database",
        )
        return _with_race(found, offered)
    server = f"the server offers only {offered}, which" if offered else "the server"
    return Finding(
        "FAIL",
        "pgvector",
        f"not installed, and {server} has no pgvector >= 0.7 (halfvec)",
        "install pgvector >= 0.7 on the database server, then `embed-worker migrate`",
    )


def _with_race(found: Finding, running: str) -> Finding:
    """`found`, or a warning when pgvector `running` has the HNSW vacuum race (a warning: it
    takes a VACUUM racing inserts, and a REINDEX mends the index)."""
    if _version(running) >= HNSW_VACUUM_FIXED:
        return found
    fixed = ".".join(map(str, HNSW_VACUUM_FIXED))
    return Finding(
        "warn",
        "pgvector",
        f'{found.detail}; pgvector {running} has an HNSW vacuum race, fixed in {fixed} ("Fixed '
        'possible index corruption with HNSW vacuuming"): a VACUUM of an HNSW index concurrent '
        "with inserts can corrupt it, and later VACUUMs and searches of it fail with "
        '"different halfvec dimensions N and 0"',
        f"upgrade pgvector on the database server to {fixed} or later (0.8.4 also fixes an "
        "insert failing during an HNSW vacuum), then ALTER EXTENSION vector UPDATE; REINDEX "
        "an HNSW index that already fails so",
    )


def pgmq_finding(installed: str | None, offered: str | None, as_sql: bool) -> Finding:
    """pgmq: the extension, or the SQL `migrate` installs where the server lacks it."""
    if installed is not None and _version(installed) < MIN_PGMQ:
        fix = "ALTER EXTENSION pgmq UPDATE (pgmq >= 1.4)"
        return Finding("FAIL", "pgmq", f"version {installed} is too old", fix)
    if installed is not None or as_sql:
        return Finding("ok", "pgmq", f"version {installed or 'installed as SQL'}")
    where = (
        f"version {offered} available on the server; `embed-worker migrate` creates the extension"
        if offered
        else "not on the server as an extension; `embed-worker migrate` installs it as plain SQL"
    )
    return Finding("ok", "pgmq", f"{where} in this database")
