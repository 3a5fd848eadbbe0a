"""A model change queues its rows in key ranges; status estimates a large change's progress.

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-22

Applies `0012_changeranges.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
