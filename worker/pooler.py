"""Which pooler is in front of the database, as observed, and EMBED_POOL_MODE checked against it.

Behind a transaction pooler (PgBouncer's `pool_mode = transaction`, Supavisor's port 6543) a
client connection has no server session of its own, and our connections must reset each
transaction's (EMBED_POOL_MODE=transaction, docs/poolers.md). With EMBED_POOL_MODE=session
there, our session settings reach the pool's other clients, theirs reach our statements, and
the watchdog ends the server session our connection's first reset ran in, which by then may be
another client's. So the worker (worker/process/startup.py) and the commands that connect
(worker/cli/connection.py) refuse that at start (`refuse()`: ConfigError, exit 2), and doctor
reports it (worker/cli/pooler.py).

Nothing tells a client which kind of pooler it talks to, so it is observed: behind any pooler
libpq's backend pid (the start-up message's) is the pooler's cancel key, not the server
backend's `pg_backend_pid()`; and only behind a transaction pooler does a server backend serve
two client connections that are both open, or one client connection's transactions run in two
backends. A session pooler is never taken for a transaction pooler (its client connection keeps
its server session while open, and no other client gets it meanwhile). One look at each is not
enough: a pooler that hands out its idle server connections oldest first (PgBouncer's
`server_round_robin`) gave the second connection the next server session and the first its own
again, and passed for a session pooler. So the check looks several times: a second
transaction of the first connection, right after its first (a round-robin pooler moves it to
the next server session), then `ROUNDS` rounds, each a transaction of a second connection (a
pooler that hands out the server session freed last, PgBouncer's default, gives it the first's)
with one of the first inside it, and one of the first alone after it; the first sign of a
transaction pooler ends it. Compared by `pg_backend_pid()`, not by a marker
set in one transaction and read in the next: a session setting outlives its transaction, and
behind a transaction pooler it would reach the pool's other clients. Still not seen: a pooler
that keeps each client on the server session it had last while that one is free (no sign
short of a pool with none free).

What the start-up check costs (nothing with EMBED_POOL_MODE=transaction): one connection of its
own, made per transaction so that nothing it sets outlives its transactions whatever is in front,
for one statement; behind a pooler, one more, then up to `ROUNDS` rounds, each two transactions
of the first connection and one of a second connection of its own (the first sign of a
transaction pooler ends them, and so does `PROBE_SECONDS` after the start: a slow link is looked
at fewer times).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

from worker import db, exceptions, queries

logger = logging.getLogger(__name__)

# "unchecked": behind a pooler whose kind could not be seen (its second connection failed)
Kind = Literal["none", "session", "transaction", "unchecked"]

# How many times the check looks behind a pooler (the module's docstring says why more than once),
# and for how long at most after its first look: on a link slow enough to reach that, fewer.
ROUNDS = 4
PROBE_SECONDS = 2.0

FIX = (
    "set EMBED_POOL_MODE=transaction (docs/poolers.md), or connect to the server itself or"
    " through a session pooler"
)


@dataclass(frozen=True)
class Pooler:
    """What our connection was seen to run behind: `kind`, and `seen`, how it showed (for
    "unchecked", why not)."""

    kind: Kind
    seen: str


def observe(conn: db.Connection, dsn: str, *, lock_timeout_ms: int) -> Pooler:
    """What `conn`, a connection to `dsn`, runs behind. Behind a pooler it opens a second
    connection to `dsn`, per transaction (nothing of ours outlives its transactions there):
    "unchecked" when that one fails. `conn`'s own errors are raised (EmbedWorkerError)."""
    with db.translated():
        first = _backend(conn)
    if first == conn.info.backend_pid:
        return Pooler("none", "connected to the server itself")
    try:
        with db.translated():
            shared = _shared_backends(conn, dsn, first, lock_timeout_ms)
    except exceptions.EmbedWorkerError as exc:
        if conn.closed or conn.broken:
            raise
        return Pooler("unchecked", str(exc))
    if shared is None:
        return Pooler("session", "each client connection kept its server session")
    return Pooler("transaction", shared)


def misconfigured(pooler: Pooler, pool_mode: str, url: str = "DATABASE_URL") -> str | None:
    """Why EMBED_POOL_MODE=`pool_mode` must not run behind `pooler`, which `url` (the variable)
    reaches; None when it may (any mode works on the server itself and behind a session pooler,
    transaction mode everywhere)."""
    if pooler.kind != "transaction" or pool_mode == "transaction":
        return None
    return (
        f"EMBED_POOL_MODE={pool_mode}, but {url} reaches a transaction pooler"
        f" ({pooler.seen}): each transaction runs in whichever server session the pooler hands"
        " it, so embed-worker's session settings (search_path = pg_catalog, pg_temp) would reach"
        " the pool's other clients, what they set would reach its statements, and the worker's"
        f" watchdog could end another client's server session; {FIX}"
    )


def refuse(
    conn: db.Connection,
    dsn: str,
    *,
    pool_mode: str,
    lock_timeout_ms: int,
    url: str = "DATABASE_URL",
) -> None:
    """ConfigError when EMBED_POOL_MODE=`pool_mode` must not run behind what `conn` (made per
    transaction, to `dsn`: `url`'s) runs behind. A second connection that fails (a full session
    pool: a transaction pooler has room for it) leaves the mode unchecked, said in a warning.
    `conn`'s own errors are raised (ConnectionLost: not reached)."""
    pooler = observe(conn, dsn, lock_timeout_ms=lock_timeout_ms)
    if pooler.kind == "unchecked":
        logger.warning(
            "%s: behind a pooler, whose kind was not seen (%s): EMBED_POOL_MODE=%s not checked"
            " against it (docs/poolers.md)",
            url,
            pooler.seen,
            pool_mode,
        )
        return
    why = misconfigured(pooler, pool_mode, url)
    if why is not None:
        raise exceptions.ConfigError(why)


def _shared_backends(conn: db.Connection, dsn: str, first: int, lock_timeout_ms: int) -> str | None:
    """How the server backend `first`, which ran `conn`'s last transaction, was seen serving
    another client connection while `conn` is open, or `conn` was seen in another backend; None
    when neither was, in `ROUNDS` rounds (fewer after `PROBE_SECONDS`)."""
    deadline = time.monotonic() + PROBE_SECONDS
    # Right after `first`'s, before anything else runs a transaction: a pooler that hands out
    # the server session idle longest gives it another one (the second connection's own first
    # transaction, at connect, would put `first` back at the head of the line).
    if (moved := _moved(conn, first)) is not None:
        return moved
    with db.connect(
        dsn, connect_timeout=5, lock_timeout_ms=lock_timeout_ms, per_transaction=True
    ) as other:
        for _ in range(ROUNDS):
            with other.transaction():
                if _backend(other) == first:
                    return f"two client connections, both open, ran in server session {first}"
                if (moved := _moved(conn, first)) is not None:  # (while the other holds one)
                    return moved
            if time.monotonic() > deadline:
                break
            if (moved := _moved(conn, first)) is not None:
                return moved
    return None


def _moved(conn: db.Connection, first: int) -> str | None:
    """How `conn`'s transaction, run now, showed it has no server session of its own: it ran
    in another backend than `first`; None when it ran in `first`."""
    then = _backend(conn)
    if then == first:
        return None
    return f"one client connection's transactions ran in server sessions {first}, {then}"


def _backend(conn: db.Connection) -> int:
    row = conn.execute(queries.get("server_backend")).fetchone()
    assert row is not None
    return int(row[0])
