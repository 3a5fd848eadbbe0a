"""Trigger messages carry keys by column: an integer key column as its array text.

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-22

Applies `0010_keyenc.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
