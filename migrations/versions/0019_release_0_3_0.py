"""Release 0.3.0: 0.2.0's tables brought up to date, and the tables new in 0.3.0.

Revision ID: 0019
Revises: 0002
Create Date: 2026-11-23

Holds 0.3.0's state changes only: `0019_release_0_3_0/upgrade.sql` (what changed in the
tables 0.2.0 had: columns added, conversions; every statement idempotent), then `tables.sql`
(the tables new in 0.3.0, as sql/ makes them). The code is reinstalled from `sql/` once, after
every pending revision ran (worker/schema.py: finish_upgrade); into an empty database, 0001
installs `sql/` whole and this revision's state changes are skipped.

Until the release, every schema change of 0.3.0 edits this revision: a function or view only in
`sql/`; a change to a table 0.2.0 had in `sql/` and in `upgrade.sql`; a table new in 0.3.0 in
`sql/` and in `tables.sql`. At the release, `make freeze-release REVISION=0019` prints the
digests to pin. Its id is 0019, not 0003: main's revisions 0002-0018 before the 0.2.0 squash
may still be stamped in someone's database (schema.SQUASHED_REVISIONS), so their ids are never
reused.
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
