"""Status in constant time: row counts of large tables are estimated from the catalog and
ANALYZE statistics; embeddings.status_exact (`status --exact`) keeps the exact counts.

Revision ID: 0009
Revises: 0011
Create Date: 2026-11-22

Applies `0009_counters.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0009"
down_revision = "0011"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
