"""Correctness under faults and redefinition (issue 12): target definition versions, trusted
content functions, sweep isolation, narrower worker policies.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Applies `0002_correctness.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
