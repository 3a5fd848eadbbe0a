"""doctor's pooler check, through a real PgBouncer (worker/cli/pooler.py, docs/poolers.md):
behind a transaction pooler with EMBED_POOL_MODE=session, the worker's settings reach the
pool's other clients and theirs reach the worker; doctor said nothing of it. The worker and the
commands refuse that now (tests/integration/test_pool_mode_refusal.py): doctor fails it."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support import pgbouncer
from tests.support.process import run_cli


def pooler_line(dsn: str, pool_mode: str) -> list[str]:
    """doctor's pooler finding (and its fix) against `dsn` with EMBED_POOL_MODE=`pool_mode`."""
    result = run_cli("doctor", "--database-url", dsn, env={"EMBED_POOL_MODE": pool_mode})
    lines = result.stdout.splitlines()
    found = [i for i, line in enumerate(lines) if line[6:].startswith("pooler: ")]
    assert len(found) == 1, result.stdout + result.stderr
    at = found[0]
    return lines[at : at + 2] if lines[at + 1].strip().startswith("fix:") else lines[at : at + 1]


@pytest.mark.parametrize("pool_size", [1, 3])
def test_doctor_fails_behind_a_transaction_pooler_unless_the_pool_mode_says_so(
    dsn: str, pool_size: int
) -> None:
    if reason := pgbouncer.available():
        pytest.skip(reason)
    params = conninfo_to_dict(dsn)
    server, user = int(str(params["port"])), str(params["user"])
    with pgbouncer.transaction_pooler(server, [user], pool_size=pool_size) as port:
        pooled = make_conninfo(dsn, port=str(port))
        warned = pooler_line(pooled, "session")
        # (the worker refuses to start there: worker/pooler.py)
        assert warned[0].startswith("FAIL  pooler: a transaction pooler ("), warned
        assert "but EMBED_POOL_MODE=session" in warned[0]
        assert (
            warned[1].strip()
            == "fix: set EMBED_POOL_MODE=transaction for the worker and the CLI (docs/poolers.md)"
        )
        (fine,) = pooler_line(pooled, "transaction")
        assert fine.startswith("ok    pooler: a transaction pooler ("), fine
        assert fine.endswith("; EMBED_POOL_MODE=transaction")


def test_doctor_tells_a_session_pooler_and_no_pooler_apart(dsn: str) -> None:
    if reason := pgbouncer.available():
        pytest.skip(reason)
    (direct,) = pooler_line(dsn, "session")
    assert direct == "ok    pooler: none: connected to the server itself (EMBED_POOL_MODE=session)"
    params = conninfo_to_dict(dsn)
    server, user = int(str(params["port"])), str(params["user"])
    with pgbouncer.transaction_pooler(server, [user], pool_size=3, mode="session") as port:
        (pooled,) = pooler_line(make_conninfo(dsn, port=str(port)), "session")
    assert (
        pooled == "ok    pooler: a session pooler: each client connection kept its server session"
    )
