"""The triggers write one row per statement into the inbox; the worker moves it into the queue.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-22

Applies `0016_inbox.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
