"""Priority lanes, model change without downtime (blue/green), provenance of stored vectors.

Revision ID: 0007
Revises: 0008
Create Date: 2026-11-22

Applies `0007_modelchange.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
