"""Our sessions trust nothing that someone else's code left in them.

A watched table's owner's code runs in our sessions: its triggers when the worker writes
vectors, its content function when the worker loads content or a sweep scans, always through
the owner-run functions (sql/32_access.sql), with the owner's rights. What it can still leave
behind is session state: `set_config(name, value, false)` outlives the SECURITY DEFINER function
and the commit. A search path that puts the owner's schema before pg_catalog makes our next
unqualified `clock_timestamp()` the owner's function, run as us; a statement_timeout of 1 ms or
`default_transaction_read_only` stops us serving every other tenant.

So every connection db.connect() opens is a GuardedConnection: before any statement that
follows one which may have run someone else's code, it resets the session (RESET ALL: every
setting back to what the role and database give it at connect) and pins our own settings
(`session_reset` in queries.sql: the search path `pg_catalog, pg_temp`, where only the installer
creates, and the date and interval formats psycopg reads). A statement "may have run someone else's
code" unless it is one of ours that says it runs none (`-- ours:` in its queries.sql header):
the default is distrust, so a new statement is safe before it is fast. A transaction or
savepoint that rolls back undoes the resets made in it, so it leaves the session distrusted
too; so does a commit after distrusted statements (deferred triggers fire at COMMIT).

Nothing we run waits without bound. Every reset also sets the connection's `lock_timeout`
(EMBED_LOCK_TIMEOUT_MS: `session_lock_timeout` in queries.sql), so no statement of ours waits
longer than that for a lock; and inside `bounded()`, every statement that may run someone else's
code gets a `statement_timeout` too (SET LOCAL, re-applied after each reset), so that a table
owner's trigger or content function that sleeps holds up the worker no longer than its bound.

Behind a transaction pooler (EMBED_POOL_MODE=transaction: docs/poolers.md) the session is not
ours between two transactions: the next one may run in a server session that other clients used
before and will use after. There the connection is `per_transaction`: every transaction of ours
begins by discarding what the server session carries (`transaction_discard`: RESET ALL, the
session's role, cursors, advisory locks, temporary tables) and pins our settings for that
transaction only (`set_config(..., true)`), both sent in the same exchange as the transaction's
first statement (a pipeline); a statement outside a transaction gets one of its own. Nothing of
ours outlives a COMMIT, and nothing another client left reaches our statements.

Which server session runs our statements (server_session(): the watchdog ends it) is what the
server says, never libpq's backend pid, which behind a pooler is the pooler's cancel key
(worker/server_session.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq, sql

from worker import queries
from worker.server_session import ServerSession, server_pid
from worker.session_settings import OurSettings, setting


def _ours(query: Any) -> bool:
    """Whether `query` is one of ours that runs nobody else's code."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    if isinstance(query, str):
        return query.startswith(queries.OURS)
    if isinstance(query, sql.Composed):
        first = next(iter(query), None)
        return isinstance(first, sql.SQL) and first.as_string().startswith(queries.OURS)
    if isinstance(query, sql.SQL):
        return query.as_string().startswith(queries.OURS)
    return False


class GuardedCursor(psycopg.Cursor[Any]):
    """A cursor that resets a distrusted session before its statement runs."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        conn = self.connection
        assert isinstance(conn, GuardedConnection)
        if conn.needs_transaction():
            with conn.transaction():
                return self.execute(query, params, **kwargs)
        pending = conn.before_statement(query)
        try:
            if not pending:
                return super().execute(query, params, **kwargs)
            # The reset and the statement in one exchange: a transaction pooler keeps them on
            # one server session (the transaction's), and the reset costs no round trip.
            with conn.pipeline():
                with psycopg.Cursor(conn) as cur:
                    for statement in pending:
                        cur.execute(statement)
                super().execute(query, params, **kwargs)
            return self
        finally:
            conn.after_statement(query)

    def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> None:
        conn = self.connection
        assert isinstance(conn, GuardedConnection)
        if conn.needs_transaction():
            with conn.transaction():
                return self.executemany(query, params_seq, **kwargs)
        conn.run_pending(conn.before_statement(query))
        try:
            super().executemany(query, params_seq, **kwargs)
        finally:
            conn.after_statement(query)

    def stream(self, query: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        conn = self.connection
        assert isinstance(conn, GuardedConnection)
        if conn.needs_transaction():
            with conn.transaction():
                yield from self.stream(query, params, **kwargs)
            return
        conn.run_pending(conn.before_statement(query))
        try:
            yield from super().stream(query, params, **kwargs)
        finally:
            conn.after_statement(query)


class GuardedConnection(psycopg.Connection[Any]):
    """A connection that resets its session after anyone else's code may have run in it."""

    _distrusted = True  # until the first reset: whatever the connection started with
    _ran_others = False  # in the transaction now open: statements that may have run others' code
    resets = 0  # how many resets this connection ran (bench/ and tests read it)
    # The longest any statement waits for a lock, in ms (EMBED_LOCK_TIMEOUT_MS), set by every
    # reset; None: what the role and the database give (db.connect sets it before the first).
    lock_timeout_ms: int | None = None
    # The session's statement_timeout in ms, set by every reset the same way; None: the role's
    # and the database's (0: none, for a statement that waits for others by design).
    statement_timeout_ms: int | None = None
    _bound_ms: int | None = None  # inside bounded(): the statement_timeout of others' code
    _bound_label: object = None  # ... and whose code it runs: (stage, target id, key)
    _bound_set: int | None = None  # the statement_timeout set (locally) since the last reset
    # A bounded statement running now: (when its bound ends, time.monotonic(); its label). Read
    # by the watchdog's thread (worker/process/watchdog.py), which sets `ended_by` to the label
    # when it ended the session because the statement ignored its bound.
    running_bounded: tuple[float, object] | None = None
    ended_by: object = None
    # Nothing ran in the session since it was made or DISCARDed (discard_session): a pooled
    # connection given back so needs no DISCARD of its own (worker/retrieval/pool.py).
    clean = False
    # Given back to a pool after each use (db.pool): its user's last exchange DISCARDs the
    # session (discard_session(then=...)), or the pool's reset does after (worker/retrieval/
    # pool.py).
    pooled = False
    # The search path the session started with (`session_start_path` in queries.sql), read by
    # the first reset: the path a name the user gives is looked up in (worker/retrieval/
    # targets.py). What RESET restores; no SET of anyone's changes it.
    start_path: str | None = None
    # The target whose searches alone ran in the session since its cached plans were last
    # dropped (plans_for()), kept for its next searches (discard_session(keeping_plans_of=));
    # None: no plans kept. A search of any other target drops them first.
    plans_of: int | None = None
    # Behind a transaction pooler (EMBED_POOL_MODE=transaction): each transaction resets the
    # server session it runs in and sets ours for itself alone (the module's docstring).
    per_transaction = False
    # The server backend our session runs in, as its last reset's row said (server_session()).
    _server_pid: int | None = None
    _our_settings: OurSettings | None = None  # (_settings(): made at the first reset)

    def needs_transaction(self) -> bool:
        """Whether a statement must be given a transaction of its own first: behind a
        transaction pooler, a statement outside one (its reset must share its server session),
        unless it goes in a pipeline (whose statements share one implicit transaction)."""
        return (
            self.per_transaction
            and self.pgconn.pipeline_status == pq.PipelineStatus.OFF
            and self.pgconn.transaction_status == pq.TransactionStatus.IDLE
        )

    def server_session(self) -> ServerSession:
        """How to find the server backend that runs our statements (worker/server_session.py):
        the pid its last reset's row said; per transaction, the marker, an advisory lock that
        our transaction's reset takes and its end releases. Read by other threads (the
        watchdog's) while a statement of ours runs."""
        if self.per_transaction:
            return ServerSession(marker=self._settings_of_ours().marker())
        return ServerSession(pid=self._server_pid)

    def _settings_of_ours(self) -> OurSettings:
        if self._our_settings is None:
            self._our_settings = OurSettings()
        return self._our_settings

    def run_pending(self, pending: list[str] | None) -> None:
        """before_statement()'s reset, in an exchange of its own (for what cannot be pipelined)."""
        if pending:
            with psycopg.Cursor(self) as cur:
                for statement in pending:
                    cur.execute(statement)

    def reset_session(self) -> None:
        """RESET ALL and our settings, now (a plain cursor: this statement is not guarded);
        the first reset also reads start_path, in the same exchange. Per transaction: only
        start_path is read (each transaction resets the session it runs in)."""
        if self.per_transaction:
            row = self.execute(queries.get("session_start_path")).fetchone()
            if self.start_path is None and row is not None:
                self.start_path = row[0]
            return
        first = self.start_path is None
        then = queries.get("session_start_path") if first else None
        rows = self._reset(queries.get("session_reset"), bound=None, then=then)
        if first and rows:
            self.start_path = rows[0][0]

    def discard_session(
        self, then: str | None = None, *, keeping_plans_of: int | None = None
    ) -> list[tuple[Any, ...]]:
        """DISCARD ALL, then our reset, in one exchange (a pooled connection given back):
        nothing of the last user's session stays, and the next user's first statement needs
        no reset of its own. `then`: one statement of ours (without parameters) run last in
        the same exchange, in the session as it is now clean, whose rows are returned: a
        search's last statement costs no exchange of its own (worker/retrieval/targets.py).
        `keeping_plans_of`: the target plans_for() gave the session to: its cached plans stay
        for its next searches (any other: they are dropped too). Per transaction: nothing to
        discard (no session is ours between transactions; each resets the one it runs in), so
        only `then` runs, in a transaction of its own."""
        if then is not None and not _ours(then):
            raise ValueError("discard_session() runs only statements of ours after the reset")
        if self.per_transaction:
            self._ran_others = False
            self.plans_of = None
            return [] if then is None else self.execute(then).fetchall()
        parts = [queries.get("session_discard")]
        if keeping_plans_of is None or self.plans_of != keeping_plans_of:
            parts.append(queries.get("session_discard_plans"))
            keeping_plans_of = None
        parts.append(queries.get("session_reset"))
        rows = self._reset(";\n".join(p.rstrip().rstrip(";") for p in parts), bound=None, then=then)
        self._ran_others = False
        self.clean = True
        self.plans_of = keeping_plans_of
        return rows

    def execute_as_left(self, query: str, params: Any = None) -> psycopg.Cursor[Any]:
        """`query`, one of ours, run in the session as others' code left it: no reset before
        it (a pipeline's statement after a search's ranking, where a reset cannot go: a pipeline
        takes one statement a message). Only for statements that name everything schema-
        qualified and read our tables alone: what that code may have SET can make them fail,
        not change what they read. The session stays distrusted: the next guarded statement,
        or the pool's DISCARD (worker/retrieval/pool.py), resets it first."""
        if not _ours(query):
            raise ValueError("execute_as_left() runs only statements of ours")
        cursor = psycopg.Cursor(self)
        cursor.execute(query, params)
        return cursor

    def execute_alone(self, statement: bytes) -> None:
        """`statement`, one of ours that no transaction block may hold (CREATE INDEX
        CONCURRENTLY, worker/process/index_builder.py). Per transaction it goes alone, with no
        reset before it (one in its exchange would make a transaction block of the two), in
        whatever server session serves it: it names everything schema-qualified and runs no one
        else's code, so what that session carries can make it fail (a statement_timeout: the
        build is tried again), not make it run anything else. Elsewhere: as execute()."""
        if not self.per_transaction:
            self.execute(statement)
            return
        with psycopg.Cursor(self) as cur:
            cur.execute(statement)

    def plans_for(self, target: int | None) -> str | None:
        """The statement that drops the session's cached plans unless they were kept for
        `target`'s searches (None: a table whose target is not known yet), to send before the
        search's first; None when none needs dropping. From then on the session's plans are
        `target`'s: its search runs its table owner's code."""
        drop = None if self.plans_of in (None, target) else queries.get("session_discard_plans")
        self.plans_of = target
        return drop

    def _reset(
        self, script: str, *, bound: int | None, then: str | None = None
    ) -> list[tuple[Any, ...]]:
        """`script`, then our bounds (the lock timeout; `bound`: a statement timeout, local to
        the transaction), then `then`, in one exchange: scripts without parameters are one
        simple query. The rows of `then` (none without it)."""
        parts = [script.rstrip().rstrip(";"), *self._settings(local=False, bound=bound)]
        if then is not None:
            parts.append(then.rstrip().rstrip(";"))
        rows: list[tuple[Any, ...]] = []
        with psycopg.Cursor(self) as cur:
            cur.execute(";\n".join(parts))
            if self._server_pid is None:  # (the session's: read at its first reset)
                while self._server_pid is None and cur.nextset():
                    self._server_pid = server_pid(cur.pgresult)
            if then is not None:
                while cur.nextset():
                    pass
                rows = cur.fetchall()
        self.resets += 1
        self._distrusted = False
        self._bound_set = bound
        return rows

    def _settings(self, *, local: bool, bound: int | None) -> list[str]:
        """Our settings' statements, to follow a RESET ALL (worker/session_settings.py).
        `local`: for the transaction alone (behind a transaction pooler), else for the
        session; `bound`: a statement timeout local to the transaction too."""
        return self._settings_of_ours().statements(
            self,
            local=local,
            bound=bound,
            lock_timeout_ms=self.lock_timeout_ms,
            statement_timeout_ms=self.statement_timeout_ms,
        )

    @contextmanager
    def bounded(self, ms: int, label: object = None) -> Iterator[None]:
        """Inside, each statement that may run someone else's code (a table owner's trigger,
        content function: any that is not one of `ours`) gets a statement_timeout of `ms`:
        SET LOCAL, in the transaction open, or in one opened here for the block. Nested blocks:
        the innermost bound. `label` says whose code it is (stage, target id, row key or None:
        worker/process/watchdog.py)."""
        outer, outer_label = self._bound_ms, self._bound_label
        self._bound_ms, self._bound_label = max(ms, 1), label
        try:
            if self.pgconn.transaction_status == pq.TransactionStatus.IDLE:
                with self.transaction():
                    yield
            else:
                yield
        finally:
            self._bound_ms, self._bound_label = outer, outer_label

    def _transaction_reset(self, bound: int | None) -> list[str]:
        """Per transaction: the statements that discard what the server session carries and
        set ours for this transaction alone (`bound`: a statement timeout too), to send before
        the statement that needs them, in its exchange. The transaction's isolation level is its
        BEGIN's (db.connect), whatever the session's default."""
        discard = queries.get("transaction_discard").split(";")
        reset = [s.strip() for s in discard if s.strip()]
        reset += self._settings(local=True, bound=bound)
        self.resets += 1
        self._distrusted = False
        self._bound_set = bound
        return reset

    def before_statement(self, query: Any = None) -> list[str] | None:
        """Resets a distrusted session before `query`; per transaction, returns the reset's
        statements instead, for the caller to send in the statement's exchange."""
        self.clean = False
        if self.pgconn.transaction_status == pq.TransactionStatus.INERROR:
            return None
        bound = None if query is None or _ours(query) else self._bound_ms
        pending = None
        if self._distrusted and self.per_transaction:
            pending = self._transaction_reset(bound)
        elif self._distrusted:
            self._reset(queries.get("session_reset"), bound=bound)
        elif bound is not None and self._bound_set != bound:
            with psycopg.Cursor(self) as cur:
                cur.execute(setting(self, "statement_bound", bound))
            self._bound_set = bound
        if bound is not None:
            self.running_bounded = (time.monotonic() + bound / 1000, self._bound_label)
        return pending

    def after_statement(self, query: Any) -> None:
        self.running_bounded = None
        if not _ours(query):
            self._distrusted = True
            self._ran_others = True

    @contextmanager
    def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> Iterator[psycopg.Transaction]:
        try:
            with super().transaction(savepoint_name, force_rollback) as tx:
                yield tx
        except BaseException:
            self._distrusted = True  # the rollback undid the resets made inside
            raise
        finally:
            if force_rollback:
                self._distrusted = True
            self._closed_transaction()

    def commit(self) -> None:
        super().commit()
        self._closed_transaction()

    def rollback(self) -> None:
        super().rollback()
        self._distrusted = True

    def _closed_transaction(self) -> None:
        # Deferred triggers fire at COMMIT, after the last statement we could reset before.
        if self.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            self._bound_set = None  # SET LOCAL ended with the transaction
            if self.per_transaction:  # so did our settings; the next may run in another session
                self._distrusted = True
            if self._ran_others:
                self._distrusted = True
                self._ran_others = False
