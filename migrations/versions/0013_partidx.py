"""watch() defers the HNSW index of a large partitioned table, built partition by partition.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-22

Applies `0013_partidx.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
