"""doctor's extension checks, from what the database has and what the server offers (the test
cluster offers everything, so the server-side cases are checked here)."""

from __future__ import annotations

import pytest

from worker.cli.doctor import pgmq_finding, vector_finding


@pytest.mark.parametrize(
    ("installed", "offered", "level", "says"),
    [
        ("0.8.0", "0.8.0", "ok", "version 0.8.0"),
        (None, "0.8.0", "ok", "`embed-worker migrate` creates the extension"),
        ("0.6.2", "0.8.0", "FAIL", "has no halfvec"),
        (None, "0.6.2", "FAIL", "the server offers only 0.6.2"),
        (None, None, "FAIL", "has no pgvector >= 0.7"),
    ],
)
def test_pgvector_needs_installing_on_the_server_only_when_it_offers_none(
    installed: str | None, offered: str | None, level: str, says: str
) -> None:
    found = vector_finding(installed, offered)
    assert (found.level, found.check) == (level, "pgvector")
    assert says in found.detail
    assert ("install pgvector >= 0.7 on the database server" in found.fix) == (
        installed is None and level == "FAIL"
    )


@pytest.mark.parametrize(
    ("installed", "offered", "as_sql", "level", "says"),
    [
        ("1.13.0", "1.13.0", False, "ok", "version 1.13.0"),
        (None, None, True, "ok", "installed as SQL"),
        (None, "1.13.0", False, "ok", "`embed-worker migrate` creates the extension"),
        (None, None, False, "ok", "`embed-worker migrate` installs it as plain SQL"),
        ("1.3.0", "1.13.0", False, "FAIL", "too old"),
    ],
)
def test_pgmq_is_always_something_migrate_provides(
    installed: str | None, offered: str | None, as_sql: bool, level: str, says: str
) -> None:
    found = pgmq_finding(installed, offered, as_sql)
    assert (found.level, found.check) == (level, "pgmq")
    assert says in found.detail
