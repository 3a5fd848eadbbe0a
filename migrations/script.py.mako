"""Release ${message}: the previous release's tables brought up to date, then this release's code.

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Runs `<this file's name>/upgrade.sql` (create it: the changes to tables the previous release
had, every statement idempotent), then the code reinstall from `<name>/schema/` once released
and frozen (`make freeze-release`), from `sql/` until then. One revision per release:
docs/development.md, "Schema changes".
"""

from __future__ import annotations

from worker import schema

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}
release = "X.Y.Z"  # the release this revision ships in

upgrade, downgrade = schema.release_steps(__file__)
