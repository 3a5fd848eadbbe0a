"""The 0.1.0 schema: extensions, the embeddings schema, the embedding_jobs queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Released and frozen (schema.RELEASED_REVISIONS pins its files): it applies its own copy of the
files `sql/` held at 0.1.0 (`0001_initial/`). Release 0.2.0's revision takes it from there.
"""

from __future__ import annotations

from worker import schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
release = "0.1.0"


def upgrade() -> None:
    conn = schema.revision_connection()
    schema.ensure_pgmq(conn)
    schema.run_files(conn, schema.revision_files("0001_initial"))


def downgrade() -> None:
    # The current uninstall script: it removes what any revision installed.
    schema.uninstall(schema.revision_connection())
