"""The database schema: where its SQL lives, installing it, and migrating with Alembic.

`sql/` holds the current schema as readable SQL files of two kinds, installed two ways, the state
first (`files.install_files`); `sql/uninstall.sql` removes it, whatever revision installed it:

- *state*, `sql/state/NN_name.sql` in name order: extensions, the schema, tables, indexes, seed
  rows. Every file is re-runnable over an existing install (`CREATE TABLE IF NOT EXISTS`, `ON
  CONFLICT DO NOTHING`, ...) and calls none of our functions, so a table that is new in this
  release comes from `sql/` alone.
- *code*, `sql/NN_name.sql` in name order: functions, views and the composite types functions
  take, plain `CREATE`, and what needs them (event triggers, the default queue). `reinstall_code`
  drops all of them (never the per-target functions `embeddings_<id>_*` that watch()
  generated), runs the files, then regenerates every target's functions and triggers and every
  queue's notification trigger (`sql/99_regenerate.sql`). A fresh install is the same path over
  an empty schema.

One Alembic revision per release (`migrations/versions/`), holding only state: code always
comes from `sql/`. `0001` installs the current `sql/` whole into an empty database (a fresh
install is always of this package's release). Each later revision holds its state changes:
`upgrade.sql` (what changed in the tables of the previous release: columns added, conversions,
data moved; idempotent) and `tables.sql` (the tables new in its release, as the release made
them, so that later deltas can rely on them). A database at an older release runs the pending
revisions' state files in order, then the code is reinstalled from `sql/` once
(`finish_upgrade`, called by migrations/env.py). A released revision never changes
(`files`: RELEASED_REVISIONS pins the sha256 of its files). Databases at the revisions
0002-0018 that main carried before release 0.2.0 squashed them are re-stamped as 0001 and
upgraded (upgrade.sql is idempotent). A database at an older release comes from that
release's package or from a dump (tests/migration/fixtures/): this package cannot stop at an
older revision, because it only has the newest code.

A wheel carries `sql/` and `migrations/` inside the package (`worker/_sql`,
`worker/_migrations`), so an installed worker migrates without a checkout.

The package's modules: `install` (running sql/, the code reinstall), `code` (the reinstall's
steps around the files), `revisions` (what a revision's upgrade and downgrade run; which revision
a database is at), `migration` (`migrate` and `downgrade` through Alembic), `locks` (the locks
an upgrade takes first), `files` (where sql/ and migrations/ are; released revisions' digests).
The names below are the schema's API, which the released revisions call as `schema.<name>`.
"""

from worker.schema.install import (
    bundled_pgmq_sql,
    ensure_pgmq,
    install,
    reinstall_code,
    run_files,
    uninstall,
    use_installer_path,
)
from worker.schema.migration import (
    MIGRATION_LOCK_KEY,
    Migration,
    downgrade,
    migrate,
    on_version_apply,
)
from worker.schema.revisions import (
    SQUASHED_REVISIONS,
    VERSION_TABLE,
    Mismatch,
    current_revision,
    downgrade_revision,
    finish_upgrade,
    head_revision,
    install_initial,
    installed,
    known_revision,
    mismatch,
    release_steps,
    restamp_squashed,
    revision_connection,
    unrecorded,
    upgrade_release,
)

__all__ = [
    "MIGRATION_LOCK_KEY",
    "SQUASHED_REVISIONS",
    "VERSION_TABLE",
    "Migration",
    "Mismatch",
    "bundled_pgmq_sql",
    "current_revision",
    "downgrade",
    "downgrade_revision",
    "ensure_pgmq",
    "finish_upgrade",
    "head_revision",
    "install",
    "install_initial",
    "installed",
    "known_revision",
    "migrate",
    "mismatch",
    "on_version_apply",
    "reinstall_code",
    "release_steps",
    "restamp_squashed",
    "revision_connection",
    "run_files",
    "uninstall",
    "unrecorded",
    "upgrade_release",
    "use_installer_path",
]
