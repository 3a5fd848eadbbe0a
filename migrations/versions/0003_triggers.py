"""The enqueue-trigger layer: per-target generated trigger functions, composite keys, renames
followed, partitions and replicas covered, NOTIFY only for waiting workers.

Revision ID: 0003
Revises: 0004
Create Date: 2026-11-22

Applies `0003_triggers.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0003"
down_revision = "0004"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
