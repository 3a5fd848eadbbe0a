"""Alembic environment for embed-worker.

`embed-worker migrate` passes an open SQLAlchemy connection in `config.attributes`. Run through
the `alembic` command instead (`alembic -c migrations/alembic.ini upgrade head`), it connects to
DATABASE_URL (or the PG* environment).
"""

from __future__ import annotations

import os

import psycopg
from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from worker import schema
from worker.schema import locks


def run(connection: Connection) -> None:
    migration = context.config.attributes.get("migration")  # schema.Migration, from `migrate`
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table=schema.VERSION_TABLE,
        version_table_schema="public",
        transactional_ddl=True,
        on_version_apply=lambda ctx, step, heads, run_args: schema.on_version_apply(
            migration, step
        ),
    )
    with context.begin_transaction():
        driver = connection.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        schema.use_installer_path(driver)
        locks.own_bounds(driver)  # not a statement_timeout set for the applications
        # One migrator at a time; the lock ends with the transaction. Tried, never waited
        # for: any login can take an advisory lock, so a wait for it is retried until
        # --lock-wait like the tables' (worker/schema/locks.py).
        locks.serialize(driver, schema.MIGRATION_LOCK_KEY)
        # Every lock an upgrade needs on a table a running worker writes, first and all at
        # once: a worker of the release before keeps writing beside it (worker/schema/locks.py). A
        # database already at head is not locked at all.
        if schema.current_revision(driver) != schema.head_revision():
            locks.take(driver)
        restamped = schema.restamp_squashed(driver)
        if migration is not None:
            migration.restamped_from = restamped
        context.run_migrations()
        schema.finish_upgrade(driver)  # the code from sql/, once, after the state changes


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    dsn = os.environ.get("DATABASE_URL", "")
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )
    with engine.begin() as connection:
        run(connection)
    engine.dispose()
