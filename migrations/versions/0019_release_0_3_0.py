"""Release 0.3.0: 0.2.0's tables brought up to date, then the 0.3.0 code installed over them.

Revision ID: 0019
Revises: 0002
Create Date: 2026-11-23

Runs `0019_release_0_3_0/upgrade.sql` (what changed in the tables 0.2.0 had: columns added,
conversions; every statement idempotent), then the code reinstall (worker/schema.py:
reinstall_code) from `sql/` until 0.3.0 is released, from `0019_release_0_3_0/schema/` once it
is frozen (`make freeze-release REVISION=0019`). Tables new in 0.3.0 come from the files
(CREATE TABLE IF NOT EXISTS).

Until the release, every schema change of 0.3.0 edits this revision: a function or view only in
`sql/`; a table in `sql/` and in `upgrade.sql`. Its id is 0019, not 0003: main's revisions
0002-0018 before the 0.2.0 squash may still be stamped in someone's database
(schema.SQUASHED_REVISIONS), so their ids are never reused.
"""

from __future__ import annotations

from pathlib import Path

from worker import schema

revision = "0019"
down_revision = "0002"
branch_labels = None
depends_on = None
release = "0.3.0"

NAME = Path(__file__).stem


def upgrade() -> None:
    schema.upgrade_release(NAME)


def downgrade() -> None:
    schema.downgrade_revision(NAME)
