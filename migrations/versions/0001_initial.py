"""The initial schema: extensions, the embeddings schema, the embedding_jobs queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Until the first release this revision applies the current `sql/` files. When a release ships,
the files it applied are frozen: later schema changes go into `sql/` *and* into a new revision
that applies only the difference (tests/migration checks both paths give the same schema).
"""

from __future__ import annotations

from typing import Any

import psycopg
from alembic import op

from worker import schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _driver_connection() -> psycopg.Connection[Any]:
    conn = op.get_bind().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    return conn


def upgrade() -> None:
    schema.install(_driver_connection())


def downgrade() -> None:
    schema.uninstall(_driver_connection())
