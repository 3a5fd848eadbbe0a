"""The 0.1.0 schema: extensions, the embeddings schema, the embedding_jobs queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Released (schema_files.RELEASED_REVISIONS pins this file). Into an empty database it installs the
current `sql/` whole: a fresh install is always of the package's own release, and the later
revisions' state changes, meant for databases at older releases, are skipped
(schema.install_initial). A database at 0.1.0 comes from 0.1.0's package
(tests/migration/fixtures/at_0001.sql.gz for the tests).
"""

from __future__ import annotations

from worker import schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
release = "0.1.0"


def upgrade() -> None:
    schema.install_initial()


def downgrade() -> None:
    # The current uninstall script: it removes what any revision installed.
    schema.uninstall(schema.revision_connection())
