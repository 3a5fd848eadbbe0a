#!/usr/bin/env bash
# A private PostgreSQL cluster in a directory of our own: used by `make db` (.devdb/) and by the
# test suite (a throwaway directory and port). Listens on 127.0.0.1 only, trusts local TCP
# connections (it is a development cluster), preloads pg_cron.
#
#   pgcluster.sh start DIR PORT [DBNAME] [--fast]   idempotent; last line: DATABASE_URL=...
#   pgcluster.sh stop DIR                           fast shutdown; no-op when not running
#   pgcluster.sh status DIR                         exit 0 when running
#
#   pgcluster.sh destroy DIR                        stop, then delete the data (and its link target)
#   pgcluster.sh where DIR                          the data directory (DIR/data or its link's target)
#
# initdb refuses to run as root: as root the cluster belongs to the OS user `postgres`
# (created by Debian's postgresql-common). When that user cannot reach DIR (a checkout under
# /root or inside a `mktemp -d` folder, say) the data lives in
# /var/lib/postgresql/embed-worker/<hash of DIR>/ and DIR/data links to it: `destroy` (`make
# clean`) deletes it, deleting the checkout does not (its file linked-from names the link, so
# a leftover tells whose it was). Every path the postgres user opens (the data directory given to
# initdb and pg_ctl, postgresql.conf, server.log) is then the link's target, never a path
# through DIR.
set -euo pipefail

cmd=${1:?usage: pgcluster.sh start|stop|status|destroy|where DIR [PORT] [DBNAME] [--fast]}
dir=${2:?missing DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
link=$dir/data
# The data directory as the postgres user must name it: the link's target when DIR/data is one.
resolve_data() { if [ -L "$link" ]; then readlink -f "$link"; else printf '%s\n' "$link"; fi; }
data=$(resolve_data)

pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
[ -n "$pg_major" ] || { echo "pgcluster: no PostgreSQL server installed (run scripts/postgres-deps.sh)" >&2; exit 1; }
PG_BIN=/usr/lib/postgresql/$pg_major/bin

if [ "$(id -u)" -eq 0 ]; then
    owner=postgres
    id -u "$owner" >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash "$owner"
    # From /: the postgres user may not be allowed into the caller's working directory.
    as_owner() { (cd / && runuser -u "$owner" -- "$@"); }
else
    owner=$(id -un)
    as_owner() { "$@"; }
fi

running() { [ -e "$data/PG_VERSION" ] && as_owner "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; }

case "$cmd" in
status)
    running
    exit $?
    ;;
stop)
    if running; then as_owner "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null; fi
    exit 0
    ;;
where)
    printf '%s\n' "$data"
    exit 0
    ;;
destroy)
    if running; then as_owner "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null; fi
    if [ "$data" != "$link" ]; then
        rm -rf "$data"
        echo "pgcluster: deleted the cluster's data in $data" >&2
        # Ours, made for such clusters: gone with the last of them.
        rmdir "$(dirname "$data")" 2>/dev/null || true
    fi
    rm -rf "$link" "$dir/initdb.log"
    exit 0
    ;;
start) ;;
*)
    echo "pgcluster: unknown command $cmd" >&2
    exit 2
    ;;
esac

port=${3:?missing PORT}
dbname=${4:-postgres}
fast=false
[ "${5:-}" = "--fast" ] && fast=true

if [ ! -e "$data/PG_VERSION" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        chown "$owner" "$dir"
        if ! as_owner test -w "$dir"; then
            real=/var/lib/postgresql/embed-worker/$(printf '%s' "$dir" | md5sum | cut -c1-16)
            # Left over from an initdb that failed: it would refuse a non-empty directory.
            [ -e "$real/PG_VERSION" ] || rm -rf "$real"
            mkdir -p "$real"
            chown "$owner" /var/lib/postgresql/embed-worker "$real"
            ln -sfn "$real" "$link"
            data=$real
        fi
    fi
    [ -e "$data" ] || mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown "$owner" "$data"
    as_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    if [ "$data" != "$link" ]; then
        printf '%s\n' "$link" | as_owner tee "$data/linked-from" >/dev/null
        echo "pgcluster: the postgres user cannot enter $dir, so the data is in $data" >&2
        echo "pgcluster: ($link links to it; \`make clean\` deletes it, deleting the checkout does not)" >&2
    fi
    {
        echo "# written by scripts/pgcluster.sh"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = ''"
        # A test cluster also counts each statement's calls and JIT work (pg_stat_statements,
        # as Supabase and most managed services preload it): tests/security/conftest.py, Compiled.
        if $fast; then
            echo "shared_preload_libraries = 'pg_cron, pg_stat_statements'"
        else
            echo "shared_preload_libraries = 'pg_cron'"
        fi
        echo "cron.database_name = '$dbname'"
        echo "cron.host = '127.0.0.1'"   # pg_cron connects over TCP: there is no Unix socket
        echo "max_connections = 200"
        if $fast; then
            # A throwaway cluster for tests: durability buys nothing here.
            echo "fsync = off"
            echo "full_page_writes = off"
            echo "synchronous_commit = off"
        fi
    } | as_owner tee -a "$data/postgresql.conf" >/dev/null
fi

if ! running; then
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "pgcluster: 127.0.0.1:$port is already taken by another server (a \`make db\` of another checkout?)." >&2
        echo "pgcluster: pick a free port, e.g. DEVDB_PORT=$((port + 1)) make db" >&2
        exit 1
    fi
    # -p: the port asked for now wins over the one written at initdb time.
    as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -o "-p $port" -w -t 60 start >/dev/null \
        || { tail -n 20 "$data/server.log" >&2; exit 1; }
fi

psql_() { "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres "$@"; }
if [ "$(psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$dbname'")" != 1 ]; then
    psql_ -d postgres -c "CREATE DATABASE \"$dbname\"" >/dev/null
fi
echo "DATABASE_URL=postgresql://postgres@127.0.0.1:$port/$dbname"
