"""Release 0.4.0: 0.3.0's tables brought up to date, and the tables new in 0.4.0.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-25

Holds 0.4.0's state changes only: `0020_release_0_4_0/upgrade.sql` (what changed in the
tables 0.3.0 had; every statement idempotent), then `tables.sql` (the tables new in 0.4.0, as
sql/ makes them). The code is reinstalled from `sql/` once, after every pending revision ran
(worker/schema/revisions.py: finish_upgrade); into an empty database, 0001 installs `sql/`
whole and this revision's state changes are skipped.

Until the release, every schema change of 0.4.0 edits this revision: a function or view only in
`sql/`; a change to a table 0.3.0 had in `sql/` and in `upgrade.sql`; a table new in 0.4.0 in
`sql/` and in `tables.sql`. At the release, `make freeze-release REVISION=0020` prints the
digests to pin.
"""

from __future__ import annotations

from worker import schema

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None
release = "0.4.0"

upgrade, downgrade = schema.release_steps(__file__)
