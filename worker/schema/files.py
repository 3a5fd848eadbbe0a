"""Where the schema's files are (`sql/`, `migrations/`, in a checkout or inside the wheel), and
which revisions shipped in a release: their pinned digests, `make freeze-release`."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from worker import exceptions

# Revisions that shipped in a release, oldest first, with the sha256 of their state files
# (revision_digest): a test fails when one changes. Later revisions are unreleased. Pinned again
# once, by issue 38, when the frozen code copies left them (their state files did not change).
RELEASED_REVISIONS: dict[str, str] = {
    "0001": "75a74291bbb87541d3c4540b1bb09706e62934ce74f4796a56f70e5c3767bcc6",  # 0.1.0
    "0002": "a8627553dd388401d3389fd4eb067ae93132ae0dca13d6235242ba7c32510cef",  # 0.2.0
    "0019": "8565aaebcf107d56d3d2ae3c1267cb8ed7eff77ee967d920fdcb3257b04de189",  # 0.3.0
}
# The digest of sql/ (sql_digest) when the newest revision was released; None while it is open.
# Code reaches a database only with a revision's upgrade, so once the newest revision is
# released, a change of sql/ needs the next release's revision (a test checks it).
RELEASED_SQL: str | None = None
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # worker/: the wheel's _sql/, _migrations/


def bundled_or_checkout(bundled: str, checkout: str) -> Path:
    """`worker/<bundled>` in an installed package (the wheel carries it), else `<checkout>` in
    the checkout it runs from."""
    inside = _PACKAGE_DIR / bundled
    return inside if inside.exists() else _PACKAGE_DIR.parent / checkout


def sql_dir() -> Path:
    return bundled_or_checkout("_sql", "sql")


def migrations_dir() -> Path:
    return bundled_or_checkout("_migrations", "migrations")


def versions_dir() -> Path:
    return migrations_dir() / "versions"


def install_files(sql: Path | None = None) -> list[Path]:
    """The install scripts in the order they run: the state (`state/NN_name.sql`: extensions,
    tables, indexes, seed rows), then the code (`NN_name.sql`: functions and views, which the
    tables must precede)."""
    sql = sql or sql_dir()
    files = [*sorted(sql.glob("state/[0-9][0-9]_*.sql")), *sorted(sql.glob("[0-9][0-9]_*.sql"))]
    if not files:
        raise exceptions.EmbedWorkerError(f"no schema files found in {sql}")
    return files


# A name our SQL gives in schema embeddings or embeddings_internal (created, altered, dropped or
# called): `embeddings.watch`, `embeddings_internal."quoted"`.
_OUR_NAME = re.compile(r'\bembeddings(?:_internal)?\.("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)')
# What released code was, beside the revisions (migrations/older_code.txt).
_OLDER_CODE = "older_code.txt"
# A schema before a type name in a signature: `halfvec` wherever pgvector lives.
_TYPE_SCHEMA = re.compile(r'(?<=[(,])(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)\.')


def our_names(sql: Path | None = None, versions: Path | None = None) -> frozenset[str]:
    """Every name our SQL (`sql/`, and the revisions' state files, whose upgrades drop what
    older releases had) or an older release's code (older_code.txt) qualifies with one of our
    schemas: what of theirs is ours."""
    versions = versions or versions_dir()
    paths = [*(sql or sql_dir()).rglob("*.sql"), *versions.rglob("*.sql")]
    found = set()
    for path in [*paths, versions.parent / _OLDER_CODE]:
        for name in _OUR_NAME.findall(path.read_text(encoding="utf-8")):
            found.add(name[1:-1].replace('""', '"') if name.startswith('"') else name.lower())
    return frozenset(found)


def older_functions(versions: Path | None = None) -> frozenset[str]:
    """The functions older releases installed (older_code.txt), as signature() writes them."""
    found = set()
    path = (versions or versions_dir()).parent / _OLDER_CODE
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("function "):
            found.add(signature(line.removeprefix("function ")))
    return frozenset(found)


def signature(regprocedure: str) -> str:
    """A function's regprocedure text with its argument types' schemas left out, which differ
    between servers (pgvector's `extensions.halfvec` on Supabase, `public.halfvec` here)."""
    return _TYPE_SCHEMA.sub("", regprocedure.replace(", ", ","))


def revision_name(revision: str, versions: Path | None = None) -> str:
    """The file name (stem) of revision id `revision`: `0001` -> `0001_initial`."""
    found = sorted((versions or versions_dir()).glob(f"{revision}_*.py"))
    if len(found) != 1:
        raise exceptions.EmbedWorkerError(f"revision {revision}: no single file {revision}_*.py")
    return found[0].stem


def revision_digest(revision: str, versions: Path | None = None) -> str:
    """sha256 over revision `revision`'s files (its module and everything in its folder), each
    preceded by its path relative to versions/: what RELEASED_REVISIONS pins."""
    versions = versions or versions_dir()
    name = revision_name(revision, versions)
    folder = sorted(
        p for p in (versions / name).rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    digest = hashlib.sha256()
    for path in [versions / f"{name}.py", *folder]:
        digest.update(path.relative_to(versions).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def freeze_release(revision: str, versions: Path | None = None) -> str:
    """At release: the digest to pin in RELEASED_REVISIONS for release revision `revision`
    (`make freeze-release REVISION=NNNN`), and with it the digest of `sql/` to pin in
    RELEASED_SQL (what the code of the newest release must stay until the next revision)."""
    versions = versions or versions_dir()
    name = revision_name(revision, versions)
    if not (versions / name / "upgrade.sql").is_file():
        raise exceptions.EmbedWorkerError(f"revision {revision} is not a release revision")
    return revision_digest(revision, versions)


def sql_digest(sql: Path | None = None) -> str:
    """sha256 over the install files (install_files()), each preceded by its path in `sql/`."""
    sql = sql or sql_dir()
    digest = hashlib.sha256()
    for path in install_files(sql):
        digest.update(path.relative_to(sql).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def release_of(revision: str | None) -> str:
    """The release a revision belongs to (its module's `release`), said "unreleased" until it
    is frozen (RELEASED_REVISIONS): `0.2.0`, `0.3.0, unreleased`."""
    if revision is None:
        return "not installed"
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    release = getattr(script.module, "release", None) if script else None
    if not release:
        return "unreleased"
    return str(release) if revision in RELEASED_REVISIONS else f"{release}, unreleased"


def alembic_config() -> Any:
    from alembic.config import Config  # imported here: only `migrate` needs Alembic

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


if __name__ == "__main__":  # `make freeze-release REVISION=NNNN`
    if len(sys.argv) != 3 or sys.argv[1] != "freeze":
        sys.exit("usage: python -m worker.schema.files freeze REVISION")
    try:
        pinned = freeze_release(sys.argv[2])
    except exceptions.EmbedWorkerError as exc:
        sys.exit(f"make freeze-release: {exc}")
    print(f'pin in worker/schema/files.py, RELEASED_REVISIONS: "{sys.argv[2]}": "{pinned}",')
    print(f'and RELEASED_SQL = "{sql_digest()}"')
