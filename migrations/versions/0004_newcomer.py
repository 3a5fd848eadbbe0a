"""Newcomer: deferral reasons in status, cleared rows, set_default_model(), guide triggers refused.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-22

Applies `0004_newcomer.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
