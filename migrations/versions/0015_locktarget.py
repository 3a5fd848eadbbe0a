"""The worker's write locks a target's table and registration in one call.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-22

Applies `0015_locktarget.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
