#!/usr/bin/env bash
# The team MLflow server's PostgreSQL, on the head's own disk.
#
#   team_db.sh init DIR [BACKUP_DIR]   a new database cluster in DIR (once; then a no-op); with
#                                      BACKUP_DIR, a new cluster gets the newest dumps found there
#   team_db.sh start DIR               start it (a no-op when it runs)
#   team_db.sh stop DIR                stop it (a no-op when it is stopped)
#   team_db.sh dump DIR BACKUP_DIR     pg_dump of the databases mlflow and mlflow_auth to BACKUP_DIR
#   team_db.sh restore DIR DUMP_FILE [DATABASE]
#                                      a dump into DATABASE (default: the one it was taken of),
#                                      which must be new or empty
#   team_db.sh guard DIR BACKUP_DIR HOST:PORT
#                                      while the Ray head at HOST:PORT answers, a dump every
#                                      TEAM_DB_DUMP_EVERY seconds; once it is gone, a last dump,
#                                      then the database stops (the cluster YAMLs start it)
#
# Why PostgreSQL on the head's own disk: SQLite's locks are unreliable over NFS (EFS included),
# and a database's files belong on a disk of the machine that runs it (PostgreSQL on NFS needs
# mount options nothing here could check). The shared volume only ever gets finished dump files,
# written under a temporary name and renamed. init refuses a DIR on a network file system.
#
# Who runs what: run it as the cluster's user (ubuntu on AWS). PostgreSQL refuses to run as
# root, so as root the server's own tools run as the user postgres (Debian's package makes it),
# and DIR's parent folders must let that user through. The role mlflow gets a random password
# written to the caller's ~/.pgpass (or $PGPASSFILE), mode 600, which libpq reads: the tracking
# server's URI holds no password (postgresql://mlflow@127.0.0.1:PORT/mlflow).
#
# Settings (environment): TEAM_DB_PORT (5433: Debian's package starts a cluster of its own on
# 5432), TEAM_DB_KEEP (dumps kept per database, 24), TEAM_DB_DUMP_EVERY (seconds between the
# guard's dumps, 600), TEAM_DB_BIN (PostgreSQL's programs; default the newest
# /usr/lib/postgresql/*/bin).
#
# Layout of DIR: data/ (the cluster), run/ (its socket and log), port, initialised, *.lock.
set -euo pipefail

ROLE=mlflow
DATABASES=(mlflow mlflow_auth)
KEEP=${TEAM_DB_KEEP:-24}
[[ $KEEP =~ ^[1-9][0-9]*$ ]] || { echo "team_db: error: TEAM_DB_KEEP=$KEEP must be a whole number of 1 or more" >&2; exit 2; }
SELF=$(readlink -f "${BASH_SOURCE[0]}")

say() { echo "team_db: $*"; }
die() {
    echo "team_db: error: $*" >&2
    exit 1
}
usage() {
    echo "usage:" >&2
    sed -n '4,15p' "$SELF" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

pg_bin() {
    if [[ -n ${TEAM_DB_BIN:-} ]]; then
        echo "$TEAM_DB_BIN"
        return
    fi
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [[ -n $newest && -x $newest/initdb ]]; then
        echo "$newest"
    elif command -v initdb >/dev/null; then
        dirname "$(command -v initdb)"
    else
        die "PostgreSQL is not installed here (sudo apt-get install postgresql)"
    fi
}

# The server's own programs (initdb, pg_ctl, psql through the socket) run as the database's
# owner: this user, or postgres when this is root. From /, which every user may enter.
as_owner() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

absolute() { readlink -m "$1"; }

# The file system type of the folder that will hold `path` (its nearest existing parent).
fs_type() {
    local p=$1
    while [[ ! -e $p ]]; do p=$(dirname "$p"); done
    findmnt -n -o FSTYPE -T "$p" 2>/dev/null || stat -f -c %T "$p"
}

refuse_network_fs() {
    local kind
    kind=$(fs_type "$1")
    case $kind in
        nfs* | cifs | smb* | lustre | gpfs | beegfs | ceph | glusterfs | afs | panfs | wekafs | 9p | fuse.*)
            die "$1 is on a network file system ($kind); PostgreSQL needs a local disk: pick a folder on the head's own disk" ;;
    esac
}

port_of() { cat "$1/port"; }

need_initialised() {
    [[ -f $1/initialised ]] || die "$1 holds no database; run: $SELF init $1"
}

running() { as_owner "$BIN/pg_ctl" -D "$1/data" status >/dev/null 2>&1; }

# psql as the cluster's superuser (the owner) through its private socket in DIR/run.
superuser_sql() {
    local dir=$1 db=$2
    as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/run" -p "$(port_of "$dir")" -d "$db" "${@:3}"
}

pg_start() {
    local dir=$1
    if ! as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/run/postgres.log" -w -t 120 -s start >/dev/null; then
        tail -5 "$dir/run/postgres.log" >&2 || true
        die "PostgreSQL in $dir did not start (its log: $dir/run/postgres.log)"
    fi
}

pg_stop() { as_owner "$BIN/pg_ctl" -D "$1/data" -m fast -w -t 120 -s stop >/dev/null; }

# The line of ~/.pgpass (or $PGPASSFILE) for the role on this port, replaced by a new one.
write_pgpass() {
    local port=$1 password=$2 file=${PGPASSFILE:-$HOME/.pgpass} tmp
    tmp=$(mktemp "$file.XXXXXX")
    chmod 600 "$tmp"
    if [[ -f $file ]]; then
        grep -v "^127\.0\.0\.1:$port:\*:$ROLE:" "$file" >"$tmp" || true
    fi
    echo "127.0.0.1:$port:*:$ROLE:$password" >>"$tmp"
    mv -f "$tmp" "$file"
}

# The newest dump of `db` in a backup folder (names sort by their UTC time stamp), or nothing.
newest_dump() {
    { ls -1 "$1" 2>/dev/null || true; } | { grep -E "^$2-[0-9]{8}T[0-9]{6}Z\.dump$" || true; } | sort | tail -1 |
        sed "s|^|$1/|"
}

cmd_init() {
    [[ $# -ge 1 && $# -le 2 ]] || usage
    local dir backups=${2:-} port=${TEAM_DB_PORT:-5433}
    dir=$(absolute "$1")
    if [[ -f $dir/initialised ]]; then
        say "$dir is initialised already (port $(port_of "$dir")): nothing to do"
        return
    fi
    [[ ! -e $dir/data ]] || die "$dir/data is from an init that did not finish; remove $dir and run init again"
    [[ $dir != *[\'\ ]* ]] || die "$dir: pick a folder whose path has no quote or space"
    refuse_network_fs "$dir"
    # The socket's path must fit in 107 bytes (sockaddr_un).
    ((${#dir} + ${#port} + 16 <= 107)) || die "$dir is too long a path for PostgreSQL's socket; pick a shorter one"
    mkdir -p "$dir/data" "$dir/run"
    chmod 700 "$dir/data" "$dir/run"
    if ((EUID == 0)); then
        id postgres >/dev/null 2>&1 || die "there is no user postgres to run PostgreSQL as (apt-get install postgresql)"
        chmod 711 "$dir"
        chown postgres: "$dir/data" "$dir/run"
        as_owner test -w "$dir/run" ||
            die "the user postgres cannot reach $dir (a parent folder is private); pick a folder it can reach"
    else
        chmod 700 "$dir"
    fi

    # Local connections (the socket, private to the owner) as the owner only; TCP on 127.0.0.1
    # only, with a password.
    as_owner "$BIN/initdb" -D "$dir/data" --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C \
        >"$dir/run/initdb.log" 2>&1 || {
        cat "$dir/run/initdb.log" >&2
        die "initdb failed"
    }
    cat >>"$dir/data/postgresql.conf" <<EOF

# cluster/team_db.sh: this machine only, a port and a socket folder of its own
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
EOF
    echo "$port" >"$dir/port"
    pg_start "$dir"
    local password
    password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
    # The password goes on stdin, never on a command line (`ps` shows those).
    superuser_sql "$dir" postgres <<EOF
CREATE ROLE $ROLE LOGIN PASSWORD '$password';
CREATE DATABASE mlflow OWNER $ROLE;
CREATE DATABASE mlflow_auth OWNER $ROLE;
EOF
    write_pgpass "$port" "$password"
    local restored=""
    if [[ -n $backups ]]; then
        local db dump
        for db in "${DATABASES[@]}"; do
            dump=$(newest_dump "$backups" "$db")
            if [[ -n $dump ]]; then
                restore_into "$dir" "$dump" "$db"
                restored+=" $(basename "$dump")"
            fi
        done
    fi
    pg_stop "$dir"
    touch "$dir/initialised"
    say "initialised $dir: PostgreSQL on 127.0.0.1:$port, role $ROLE (password in ${PGPASSFILE:-~/.pgpass})," \
        "databases ${DATABASES[*]}${restored:+; restored from$restored}"
}

cmd_start() {
    [[ $# -eq 1 ]] || usage
    local dir
    dir=$(absolute "$1")
    need_initialised "$dir"
    # Not while a guard is stopping the database (its last dump): wait for it, then start.
    exec 9>"$dir/stop.lock"
    flock -w 300 9 || die "$dir/stop.lock is held for 5 minutes; is a dump stuck?"
    if running "$dir"; then
        say "PostgreSQL in $dir runs already (127.0.0.1:$(port_of "$dir"))"
        return
    fi
    pg_start "$dir" 9>&- # the server must not hold the lock
    say "PostgreSQL in $dir started on 127.0.0.1:$(port_of "$dir")"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir
    dir=$(absolute "$1")
    need_initialised "$dir"
    if ! running "$dir"; then
        say "PostgreSQL in $dir is stopped already"
        return
    fi
    pg_stop "$dir"
    say "PostgreSQL in $dir stopped"
}

# A dump is written under a temporary name in BACKUP_DIR, synced, then renamed: the folder
# only ever holds whole dumps, whatever stops a dump half-way (a kill, a full disk, the head
# terminated). The two databases' dumps share a time stamp and are renamed after both are
# written. One dump at a time per DIR (a lock on the head's disk: no lock ever on NFS).
cmd_dump() {
    [[ $# -eq 2 ]] || usage
    local dir backups port stamp host db
    dir=$(absolute "$1")
    backups=$(absolute "$2")
    need_initialised "$dir"
    port=$(port_of "$dir")
    running "$dir" || die "PostgreSQL in $dir is not running; start it first: $SELF start $dir"
    mkdir -p "$backups"
    umask 077 # the users' password hashes are in mlflow_auth
    exec 8>"$dir/dump.lock"
    flock -w 600 8 || die "another dump of $dir has run for 10 minutes"
    host=$(hostname -s)
    # What a dump of this machine left when it was killed (a whole one was never renamed).
    find "$backups" -maxdepth 1 -name ".*.$host.tmp" -delete
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    TMPS=()
    trap 'rm -f "${TMPS[@]}"' EXIT
    for db in "${DATABASES[@]}"; do
        TMPS+=("$backups/.$db-$stamp.$host.tmp")
        # -w: never ask for a password (it comes from ~/.pgpass); a table locked by a schema
        # migration makes the dump fail after 10 minutes rather than hang.
        "$BIN/pg_dump" -w -h 127.0.0.1 -p "$port" -U "$ROLE" -d "$db" -Fc --lock-wait-timeout=600s \
            -f "${TMPS[-1]}" || die "pg_dump of $db failed; the dumps in $backups are as they were"
    done
    sync "${TMPS[@]}"
    for db in "${DATABASES[@]}"; do
        mv -f "$backups/.$db-$stamp.$host.tmp" "$backups/$db-$stamp.dump"
    done
    sync "$backups" # the renames
    TMPS=()
    # The newest TEAM_DB_KEEP dumps of each database stay.
    for db in "${DATABASES[@]}"; do
        ls -1 "$backups" | { grep -E "^$db-[0-9]{8}T[0-9]{6}Z\.dump$" || true; } | sort | head -n "-$KEEP" |
            while read -r old; do rm -f "$backups/$old"; done
    done
    say "dumped ${DATABASES[*]} to $backups/*-$stamp.dump"
}

# The database a custom-format dump was taken of (pg_restore -l names it).
dumped_database() {
    "$BIN/pg_restore" -l "$1" | sed -n 's/^;[[:space:]]*dbname: //p' | head -1
}

restore_into() {
    local dir=$1 dump=$2 db=$3 port tables
    port=$(port_of "$dir")
    if [[ -z $(superuser_sql "$dir" postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
        superuser_sql "$dir" postgres -c "CREATE DATABASE \"$db\" OWNER $ROLE"
    fi
    tables=$(superuser_sql "$dir" "$db" -tAc \
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
    ((tables == 0)) || die "database $db holds $tables tables already; restore into a new one: $SELF restore $dir $dump NEW_NAME"
    # As the role mlflow, owner of what it restores; one transaction: all of it or nothing.
    "$BIN/pg_restore" -w -h 127.0.0.1 -p "$port" -U "$ROLE" -d "$db" --no-owner --no-privileges \
        --single-transaction --exit-on-error "$dump" || die "pg_restore of $dump into $db failed; $db is as it was"
}

cmd_restore() {
    [[ $# -ge 2 && $# -le 3 ]] || usage
    local dir dump db
    dir=$(absolute "$1")
    dump=$(absolute "$2")
    need_initialised "$dir"
    [[ -f $dump ]] || die "no dump $dump"
    running "$dir" || die "PostgreSQL in $dir is not running; start it first: $SELF start $dir"
    db=${3:-$(dumped_database "$dump")}
    [[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || die "$db: a database name is lower-case letters, digits and _"
    restore_into "$dir" "$dump" "$db"
    say "restored $dump into database $db (postgresql://$ROLE@127.0.0.1:$(port_of "$dir")/$db)"
}

head_answers() { timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

cmd_guard() {
    [[ $# -eq 3 && $3 == *:* ]] || usage
    local dir backups host=${3%:*} port=${3##*:} every=${TEAM_DB_DUMP_EVERY:-600} failures=0 last
    dir=$(absolute "$1")
    backups=$(absolute "$2")
    need_initialised "$dir"
    # One guard per DIR. A guard still busy with its last dump (the head stopped, and `ray up`
    # started it again) ends within a minute: wait for it.
    exec 7>"$dir/guard.lock"
    if ! flock -w 60 7; then
        say "a guard of $dir runs already"
        return
    fi
    say "$(date '+%F %T') guarding $dir: a dump to $backups every $every s while the Ray head at $3 answers"
    last=$SECONDS
    while true; do
        sleep 2
        if head_answers "$host" "$port"; then
            failures=0
        else
            failures=$((failures + 1))
        fi
        # Gone: 3 failed connections 2 s apart (one may be a hiccup).
        if ((failures >= 3)); then
            exec 9>"$dir/stop.lock"
            flock 9
            if head_answers "$host" "$port"; then # `ray up` started it again meanwhile
                failures=0
                flock -u 9
                continue
            fi
            say "$(date '+%F %T') the Ray head at $3 is gone: a last dump, then PostgreSQL stops"
            bash "$SELF" dump "$dir" "$backups" || say "the last dump failed"
            bash "$SELF" stop "$dir"
            return
        fi
        if ((SECONDS - last >= every)); then
            bash "$SELF" dump "$dir" "$backups" || say "$(date '+%F %T') the dump failed; again in $every s"
            last=$SECONDS
        fi
    done
}

[[ $# -ge 1 ]] || usage
command=$1
shift
case $command:$# in
    init:[12] | start:1 | stop:1 | dump:2 | restore:[23] | guard:3) ;;
    *) usage ;;
esac
BIN=$(pg_bin)
"cmd_$command" "$@"
