#!/usr/bin/env bash
# Installs what the local Postgres cluster needs, skipping every step that is already done:
#   - the PostgreSQL server, its dev headers and pg_cron (apt)
#   - pgvector >= 0.7 (halfvec), built from Debian's source package when missing or older
#   - pgmq registered as a real extension from the SQL bundled in the `pgmq` PyPI package
# Usage: scripts/postgres-deps.sh PYTHON   (PYTHON: an interpreter that can import pgmq)
# Works as root or as a user with sudo. Prints nothing but progress; exits non-zero on failure.
set -euo pipefail

PYTHON=${1:?usage: postgres-deps.sh PYTHON}
PGVECTOR_MIN=0.7.0
PGVECTOR_SUITE=${PGVECTOR_SUITE:-trixie}   # Debian release whose source package we build

say() { echo "postgres-deps: $*" >&2; }
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi

apt_install() { "$(dirname "$0")/apt-install.sh" "$@"; }

# --- the server: newest installed major version, else the distribution's default -----------
pg_major() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1; }
if [ -z "$(pg_major)" ] || [ ! -x "/usr/lib/postgresql/$(pg_major)/bin/initdb" ]; then
    apt_install postgresql
fi
PG_MAJOR=$(pg_major)
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin

missing=()
[ -x "$PG_BIN/pg_config" ] && [ -f "/usr/include/postgresql/$PG_MAJOR/server/postgres.h" ] \
    || missing+=("postgresql-server-dev-$PG_MAJOR")
[ -f "/usr/lib/postgresql/$PG_MAJOR/lib/pg_cron.so" ] || missing+=("postgresql-$PG_MAJOR-cron")
command -v make >/dev/null && command -v gcc >/dev/null || missing+=(build-essential)
command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

PG_CONFIG=$PG_BIN/pg_config
SHAREDIR=$("$PG_CONFIG" --sharedir)

# --- pgvector >= 0.7 -------------------------------------------------------------------------
installed_vector=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$SHAREDIR/extension/vector.control" 2>/dev/null || true)
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }
if [ -z "$installed_vector" ] || ! version_ge "$installed_vector" "$PGVECTOR_MIN"; then
    say "building pgvector from Debian $PGVECTOR_SUITE source (installed: ${installed_vector:-none})"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # A private apt state: the deb-src line must not touch the system's package lists.
    mkdir -p "$work/lists/partial"
    cat > "$work/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $PGVECTOR_SUITE main
SRC
    apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=-
              -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root -qq)
    apt-get "${apt_opts[@]}" update >/dev/null
    (cd "$work" && apt-get "${apt_opts[@]}" source --download-only pgvector >/dev/null 2>&1)
    # apt verified the files against the signed Release; the .dsc signature itself needs a keyring we lack.
    (cd "$work" && dpkg-source -x --skip-debianization ./pgvector_*.dsc src >/dev/null 2>&1)
    make -s -C "$work/src" PG_CONFIG="$PG_CONFIG" -j"$(nproc)" >/dev/null 2>&1
    "${SUDO[@]}" make -s -C "$work/src" PG_CONFIG="$PG_CONFIG" install >/dev/null
    say "pgvector $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$SHAREDIR/extension/vector.control") installed"
fi

# --- pgmq as a real extension, from the SQL the pgmq PyPI package bundles ---------------------
pgmq_dir=$("$PYTHON" -c 'import importlib.resources as r; print(r.files("pgmq") / "sql")')
pgmq_sql=$pgmq_dir/pgmq.sql
pgmq_version=$(tr -d '[:space:]' < "$pgmq_dir/VERSION")
target_sql="$SHAREDIR/extension/pgmq--$pgmq_version.sql"
if [ ! -f "$target_sql" ] || ! cmp -s "$pgmq_sql" "$target_sql"; then
    say "registering pgmq $pgmq_version as an extension"
    "${SUDO[@]}" install -m 0644 "$pgmq_sql" "$target_sql"
    printf "%s\n" "comment = 'A lightweight message queue. Like AWS SQS and RSMQ but on Postgres.'" \
        "default_version = '$pgmq_version'" "relocatable = false" "superuser = false" \
        "schema = 'pgmq'" \
        | "${SUDO[@]}" tee "$SHAREDIR/extension/pgmq.control" >/dev/null
fi
