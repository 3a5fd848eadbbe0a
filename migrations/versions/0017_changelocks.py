"""Model changes lock the table before the registration, as worker writes do (no deadlock).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-22

Applies `0017_changelocks.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
