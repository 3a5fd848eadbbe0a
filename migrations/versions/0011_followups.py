"""A rename of a watched table or of its columns gives the target a new definition version.

Revision ID: 0011
Revises: 0006
Create Date: 2026-11-22

Applies `0011_followups.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0011"
down_revision = "0006"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
