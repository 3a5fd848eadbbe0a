"""Release 0.2.0: 0.1.0's tables brought up to date, then the 0.2.0 code installed over them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Runs `0002_release_0_2_0/upgrade.sql` (the tables 0.1.0 had: columns added and converted; every
statement idempotent), then the code reinstall (worker/schema.py: reinstall_code) from
`0002_release_0_2_0/schema/` once 0.2.0 is released and frozen (scripts/freeze-release.sh), from
`sql/` until then. Tables new in 0.2.0 come from the files (CREATE TABLE IF NOT EXISTS).

Until the release, every schema change of 0.2.0 edits this revision: a function or view only in
`sql/`; a table in `sql/` and in `upgrade.sql`. It also upgrades databases at the revisions
0002-0018 that main carried before they were squashed into this one (re-stamped as 0001 first:
worker/schema.py, restamp_squashed).
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
