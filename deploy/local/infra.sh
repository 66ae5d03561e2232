#!/usr/bin/env bash
# Local infrastructure for Sen: PostgreSQL + FerretDB 1.24 (MongoDB wire) and
# RabbitMQ, installed from Debian's packages / built with Go when missing, with
# their data under the project's own state folder (.sen/ by default).
#
#   infra.sh up       install what is missing, start everything, wait until it answers
#   infra.sh down     stop everything this script started
#   infra.sh status   say what answers
#   infra.sh env      print MONGO_URL / AMQP_URL for the running servers
#   infra.sh packages install what the processes need besides the servers (npm, WeasyPrint's pango)
#   infra.sh tune [db...]  index FerretDB's PostgreSQL tables for what the services declare (after indexes)
#   infra.sh settle   vacuum and analyze FerretDB's tables now (after a bulk load, e.g. the bench's)
#   infra.sh rabbit-restart   stop and start the broker (used by fault tests)
#   infra.sh psql ...         psql on FerretDB's PostgreSQL database (tests read what tune did)
#
# With MONGO_URL and AMQP_URL both set, `up` installs and starts nothing.
# Settings: SEN_STATE_DIR, SEN_TOOLS_DIR, SEN_PG_PORT, SEN_MONGO_PORT, SEN_AMQP_PORT,
# SEN_FERRETDB_GOMEMLIMIT (FerretDB's Go memory limit, where it collects garbage; default 1GiB).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
state=${SEN_STATE_DIR:-$root/.sen}
tools=${SEN_TOOLS_DIR:-$HOME/.local/share/sen/bin}
pg_port=${SEN_PG_PORT:-54329}
mongo_port=${SEN_MONGO_PORT:-27017}
amqp_port=${SEN_AMQP_PORT:-5672}
ferretdb_version=v1.24.2

log() { printf 'infra: %s\n' "$*" >&2; }
die() { printf 'infra: error: %s\n' "$*" >&2; exit 1; }

as_user() {  # run a command as a service user when we are root
  local user=$1; shift
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u "$user" -- "$@"); else "$@"; fi
}

let_services_in() {  # as root: the postgres/rabbitmq users must reach $state (a clone may sit in a 0700 dir)
  [ "$(id -u)" = 0 ] || return 0
  local d=$state
  while [ "$d" != / ]; do
    d=$(dirname "$d")
    [ -d "$d" ] && [ "$(stat -c %A "$d" | cut -c10)" != x ] && [ "$(stat -c %A "$d" | cut -c10)" != t ] &&
      chmod o+x "$d"
  done
  return 0
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # name port seconds
  local i
  for ((i = 0; i < $3 * 5; i++)); do port_open "$2" && return 0; sleep 0.2; done
  die "$1 did not answer on 127.0.0.1:$2 within $3 s (logs: $state/log)"
}

apt_install() {  # package...
  command -v apt-get >/dev/null || die "apt-get not found: install $* by hand or set MONGO_URL/AMQP_URL"
  [ "$(id -u)" = 0 ] || die "installing $* needs root (or set MONGO_URL/AMQP_URL)"
  if [ ! -f "$state/.apt-updated" ]; then
    log "apt-get update"; apt-get update -qq >/dev/null; mkdir -p "$state"; touch "$state/.apt-updated"
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------- PostgreSQL
pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }; done
  return 1
}

pg_up() {
  pg_bin >/dev/null || apt_install postgresql
  local bin; bin=$(pg_bin)
  local data=$state/pg
  mkdir -p "$state/log"
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$data" "$state/log"
    as_user postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$state/log"
  if ! port_open "$pg_port"; then
    log "starting PostgreSQL on 127.0.0.1:$pg_port"
    as_user postgres "$bin/pg_ctl" -D "$data" -l "$state/log/postgresql.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $pg_port -k /tmp -c max_connections=600 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c plan_cache_mode=force_custom_plan -c cpu_operator_cost=0.05 -c random_page_cost=1.1" start >/dev/null
  fi
  wait_port PostgreSQL "$pg_port" 60
  as_user postgres "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='ferretdb'" | grep -q 1 ||
    as_user postgres "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres ferretdb
}

pg_down() {
  local bin; bin=$(pg_bin) || return 0
  [ -f "$state/pg/postmaster.pid" ] && as_user postgres "$bin/pg_ctl" -D "$state/pg" -m fast -w stop >/dev/null || true
}

pg_psql() { as_user postgres "$(pg_bin)/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d ferretdb -qtA "$@"; }

# FerretDB 1.24 filters with `_jsonb->$1 @> $2` and indexes with btree on `(_jsonb->'f')`,
# which cannot serve `@>`: every pushed-down equality scans its table. A GIN expression
# index per indexed top-level field (and _id), with custom plans so the key is a constant,
# lets PostgreSQL use it. This only tunes the local server; MongoDB uses the app's indexes.
pg_tune() {  # [database...]: those only (FerretDB's schema of each), else every one
  # custom plans make FerretDB's key parameter a constant the indexes match; every filter
  # detoasts a whole document, which the default costs do not count, so scans look cheap
  pg_psql -v ON_ERROR_STOP=1 -c "ALTER DATABASE ferretdb SET plan_cache_mode = force_custom_plan" \
          -c "ALTER DATABASE ferretdb SET cpu_operator_cost = 0.05" \
          -c "ALTER DATABASE ferretdb SET random_page_cost = 1.1" >/dev/null || return 1
  local schemas s failed=""
  schemas=$(pg_psql -v ON_ERROR_STOP=1 -c "SELECT table_schema FROM information_schema.tables
                                           WHERE table_name = '_ferretdb_database_metadata'
                                           ORDER BY 1") || return 1
  # one transaction a schema: a single one over them all takes a lock per table and index
  # touched and, past max_locks_per_transaction x max_connections (a few thousand, reached
  # with a few dozen databases on the server), failed whole ("out of shared memory") and
  # tuned nothing; psql without ON_ERROR_STOP still exited 0, so the benches ran untuned
  for s in $schemas; do
    if [ $# -gt 0 ]; then
      case " $* " in *" $s "*) ;; *) continue ;; esac
    fi
    pg_psql -v ON_ERROR_STOP=1 -v schema="$s" >/dev/null <<'SQL' || failed="$failed $s"
SET client_min_messages = warning;
SELECT set_config('sen.tune_schema', :'schema', false);
DO $tune$
DECLARE s text := current_setting('sen.tune_schema'); r record; k text;
BEGIN
    FOR r IN EXECUTE format('SELECT _jsonb->>''_id'' AS coll, _jsonb->>''table'' AS tbl,
                                    _jsonb->''indexes'' AS ixs
                             FROM %I._ferretdb_database_metadata', s) LOOP
      -- the audit trail only grows (an event per read and search): autovacuum re-analyzes and
      -- vacuums it after half again as many rows, not a tenth / a fifth. An ANALYZE of it took
      -- 1.2 s of PostgreSQL's CPU; one during 8 s of reads raised their p99 from 21 to 28 ms.
      IF r.coll = 'AuditEvent' THEN
        EXECUTE format('ALTER TABLE %I.%I SET (autovacuum_analyze_scale_factor = 0.5,
                        autovacuum_vacuum_insert_scale_factor = 0.5)', s, r.tbl);
      END IF;
      -- equality targets get a GIN index; range and sort keys (lu, *_lo, *_hi, *_s) are
      -- evaluated by FerretDB itself, so an index on them is only write cost
      FOR k IN SELECT '_id' UNION
               SELECT DISTINCT jsonb_object_keys(ix->'key') FROM jsonb_array_elements(r.ixs) ix LOOP
        CONTINUE WHEN position('.' in k) > 0 OR left(k, 1) = '$' OR k = 'lu' OR k ~ '_(lo|hi|s)$';
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin ((_jsonb->%L) jsonb_path_ops)',
                       r.tbl || '_sen_gin_' || left(md5(k), 12), s, r.tbl, k);
      END LOOP;
      -- FerretDB's own non-unique btrees never serve its `@>` filters: drop them (unique ones
      -- stay, they enforce invariants); its metadata still lists them, as MongoDB would
      FOR k IN SELECT ix->>'pgindex' FROM jsonb_array_elements(r.ixs) ix
               WHERE NOT coalesce((ix->>'unique')::boolean, false) AND ix->>'pgindex' IS NOT NULL LOOP
        EXECUTE format('DROP INDEX IF EXISTS %I.%I', s, k);
      END LOOP;
      EXECUTE format('ANALYZE %I.%I', s, r.tbl);
    END LOOP;
END $tune$;
SQL
  done
  for s in "$@"; do
    case " $(echo $schemas) " in *" $s "*) ;; *) log "tune: no database $s (nothing to tune)" ;; esac
  done
  if [ -n "$failed" ]; then log "tune failed for:$failed"; return 1; fi
}

# ---------------------------------------------------------------- FerretDB
ferretdb_build() {
  command -v go >/dev/null || apt_install golang-go
  log "building FerretDB $ferretdb_version (once; about a minute)"
  local tmp dir; tmp=$(mktemp -d)
  # `go install pkg@version` also asks for the module's version list, which
  # some proxies refuse; downloading the one version and building it does not.
  dir=$(cd "$tmp" && go mod download -json "github.com/FerretDB/FerretDB@$ferretdb_version" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$tools"
  # The module's source leaves build/version/version.txt for `task gen-version`.
  cp -r "$dir" "$tmp/src" && chmod -R u+w "$tmp/src"
  echo "$ferretdb_version" >"$tmp/src/build/version/version.txt"
  (cd "$tmp/src" && GOFLAGS=-buildvcs=false go build -trimpath -o "$tools/ferretdb.tmp" ./cmd/ferretdb)
  mv "$tools/ferretdb.tmp" "$tools/ferretdb"
  rm -rf "$tmp"
}

ferretdb_up() {
  [ -x "$tools/ferretdb" ] || ferretdb_build
  mkdir -p "$state/ferretdb" "$state/log"
  if ! port_open "$mongo_port"; then
    log "starting FerretDB on 127.0.0.1:$mongo_port"
    local debug_port=$((mongo_port + 10000))
    # Go's proportional GC (GOGC=100) cost FerretDB a fifth of its CPU under load: it allocates
    # a lot per decoded document. Collect only near a memory limit instead (measured: read by id
    # 370 → 580 req/s, _include p95 53 → 35 ms on 22,000 resources); SEN_FERRETDB_GOMEMLIMIT sizes it.
    # An update holds one PostgreSQL connection for its query while it opens a second for each
    # document's transaction (FerretDB 1.24, handler/msg_update.go), so as many updates at once as the
    # pool has connections (its default, 50) all wait for a second one and FerretDB hangs for good:
    # seen with two test runs and benches at once (50 connections idle, every command waiting). With
    # 400 it would take 400 updates at once; PostgreSQL's max_connections (600, pg_up) leaves room
    # for the tests' own FerretDBs over it (tests/own_database.py) and psql.
    GOGC=off GOMEMLIMIT="${SEN_FERRETDB_GOMEMLIMIT:-1GiB}" \
    nohup "$tools/ferretdb" --handler=postgresql \
      --postgresql-url="postgres://postgres@127.0.0.1:$pg_port/ferretdb?pool_max_conns=400" \
      --state-dir="$state/ferretdb" --listen-addr="127.0.0.1:$mongo_port" \
      --debug-addr="127.0.0.1:$debug_port" --telemetry=disable --log-level=warn \
      >"$state/log/ferretdb.log" 2>&1 &
    echo $! >"$state/ferretdb.pid"
  fi
  wait_port FerretDB "$mongo_port" 60
}

ferretdb_down() {
  if [ -f "$state/ferretdb.pid" ]; then
    kill "$(cat "$state/ferretdb.pid")" 2>/dev/null || true
    rm -f "$state/ferretdb.pid"
  fi
}

# ---------------------------------------------------------------- RabbitMQ
rabbit_env() {
  # a node name of its own per port: a second stack on this machine (SEN_STATE_DIR and SEN_*_PORT of its own, as a
  # benchmark's private one) neither fails to start beside the first (the name taken) nor stops it on `down`
  if [ "$amqp_port" = 5672 ]; then export RABBITMQ_NODENAME=sen@localhost; else export RABBITMQ_NODENAME=sen-$amqp_port@localhost; fi
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$amqp_port
  export RABBITMQ_DIST_PORT=$((amqp_port + 20000))
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE=$state/rabbitmq/mnesia
  export RABBITMQ_LOG_BASE=$state/log
  export RABBITMQ_PID_FILE=$state/rabbitmq/rabbit.pid
  export RABBITMQ_CONFIG_FILE=$state/rabbitmq/rabbitmq
  export RABBITMQ_ENABLED_PLUGINS_FILE=$state/rabbitmq/enabled_plugins
  export RABBITMQ_CONF_ENV_FILE=$state/rabbitmq/rabbitmq-env.conf
}

rabbit_ctl() { rabbit_env; rabbitmqctl -q "$@"; }

rabbit_up() {
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  rabbit_env
  mkdir -p "$state/rabbitmq/mnesia" "$state/log"
  [ -f "$state/rabbitmq/rabbitmq.conf" ] || cat >"$state/rabbitmq/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$amqp_port
loopback_users = none
management.tcp.ip = 127.0.0.1
CONF
  [ -f "$state/rabbitmq/enabled_plugins" ] || echo '[].' >"$state/rabbitmq/enabled_plugins"
  [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1 && chown -R rabbitmq:rabbitmq "$state/rabbitmq" && chown rabbitmq "$state/log" && chmod 777 "$state/log"
  # sourced by rabbitmq-env after the switch to the rabbitmq user (which resets the soft
  # limit): each quorum queue and connection holds descriptors, and 1024 runs out under the tests
  echo 'ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true' >"$state/rabbitmq/rabbitmq-env.conf"
  if ! port_open "$amqp_port"; then
    log "starting RabbitMQ on 127.0.0.1:$amqp_port"
    rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  wait_port RabbitMQ "$amqp_port" 120
  rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || true
}

rabbit_down() {
  command -v rabbitmqctl >/dev/null || return 0
  rabbit_env
  rabbitmqctl -q stop >/dev/null 2>&1 || true
}

rabbit_restart() {  # stop the broker's application and start it again (fault tests)
  rabbit_env
  rabbitmqctl -q stop_app >/dev/null
  sleep "${1:-2}"
  rabbitmqctl -q start_app >/dev/null
  wait_port RabbitMQ "$amqp_port" 60
}

# ---------------------------------------------------------------- what the processes need
# `make run` and `make test` on a fresh machine: npm for the portal's front-end packages (`npm ci`),
# and the libraries WeasyPrint loads to print PDFs, receipts and consult minutes (pango, a font with Vietnamese letters)
packages() {
  local need=() ldconfig
  command -v npm >/dev/null || need+=(npm)
  ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
  "$ldconfig" -p 2>/dev/null | grep -q 'libpangoft2-1\.0\.so\.0' ||
    need+=(libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core)
  [ ${#need[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] ||
    die "missing: ${need[*]} (the portal's npm packages, receipts and consult minutes as PDF): install them, or run as root with apt-get"
  apt_install "${need[@]}"
}

# ---------------------------------------------------------------- main
print_env() {  # the URLs to use: the ones given, else the local servers'
  echo "MONGO_URL=${MONGO_URL:-mongodb://127.0.0.1:$mongo_port/}"
  echo "AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:$amqp_port//}"
}

external() { [ -n "${MONGO_URL:-}" ] && [ -n "${AMQP_URL:-}" ]; }

case "${1:-}" in
  up)
    if external; then log "MONGO_URL and AMQP_URL are set: using those servers, starting nothing"; exit 0; fi
    mkdir -p "$state"
    let_services_in
    [ -n "${MONGO_URL:-}" ] || { pg_up; ferretdb_up; }
    [ -n "${AMQP_URL:-}" ] || rabbit_up
    log "ready"
    ;;
  down)
    external && exit 0
    ferretdb_down; pg_down; rabbit_down
    ;;
  status)
    port_open "$pg_port" && echo "postgresql up" || echo "postgresql down"
    port_open "$mongo_port" && echo "ferretdb up" || echo "ferretdb down"
    port_open "$amqp_port" && echo "rabbitmq up" || echo "rabbitmq down"
    ;;
  env) print_env ;;
  packages) packages ;;
  rabbit-restart) rabbit_restart "${2:-2}" ;;
  tune) shift; if port_open "$pg_port"; then pg_tune "$@"; else log "no local PostgreSQL: nothing to tune"; fi ;;
  settle)  # after a bulk load: vacuum and analyze now rather than let autovacuum run into what follows
    if port_open "$pg_port"; then
      as_user postgres "$(pg_bin)/vacuumdb" -h 127.0.0.1 -p "$pg_port" -U postgres --analyze --quiet ferretdb
    else log "no local PostgreSQL: nothing to settle"; fi ;;
  rabbitmqctl) shift; rabbit_ctl "$@" ;;
  psql) shift; port_open "$pg_port" || { log "no local PostgreSQL"; exit 3; }; pg_psql "$@" ;;
  *) echo "usage: $0 up|down|status|env|packages|tune|settle|rabbit-restart [seconds]|rabbitmqctl ...|psql ..." >&2; exit 2 ;;
esac
