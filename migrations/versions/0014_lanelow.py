"""One check of whether a backfill lane is full, for the worker's steps and sweep()'s.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-22

Applies `0014_lanelow.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
