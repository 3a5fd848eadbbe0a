"""Release 0.2.0: 0.1.0's tables brought up to date, and the tables new in 0.2.0.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Holds 0.2.0's state changes only: `0002_release_0_2_0/upgrade.sql` (the tables 0.1.0 had:
columns added and converted; every statement idempotent), then `tables.sql` (the tables new in
0.2.0, as 0.2.0 made them). The code is reinstalled from `sql/` once, after every pending
revision ran (worker/schema.py: finish_upgrade). Until issue 38 (0.3.0) this revision also
carried a frozen copy of 0.2.0's `sql/`, code included; its state files did not change when the
copy left. It also upgrades databases at the revisions 0002-0018 that main carried before they
were squashed into this one (re-stamped as 0001 first: worker/schema.py, restamp_squashed).
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
release = "0.2.0"

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_release(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
