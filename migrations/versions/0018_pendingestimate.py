"""status samples the pending keys of a lane with many messages (exact with status --exact).

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-22

Applies `0018_pendingestimate.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
