"""watch() on a large table: existing rows are queued by a backfill in key ranges after watch().

Revision ID: 0008
Revises: 0009
Create Date: 2026-11-22

Applies `0008_bigwatch.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0008"
down_revision = "0009"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
