"""watch() again after a dropped content column re-embeds every row and clears rows left blank.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

Applies `0006_ddlprop.sql` beside this file (frozen once released); sql/ gets the same
change for fresh installs.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_revision(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
