# Sourced by .ci/run (bash, set -euo pipefail) before `make test`.
# Starts PostgreSQL on loopback for the label app's PostgreSQL tests and exports
# PREFDIFF_TEST_PG_URL. Idempotent: reuses an installed package, an existing cluster and a
# running server. Never aborts CI: on any failure it prints a note and the PostgreSQL tests
# skip themselves (they say why).

_prefdiff_pg_log() { echo "services.sh: $*" >&2; }

_prefdiff_pg_setup() {
  local db=prefdiff_test role=prefdiff_test password version cluster port status line
  if [ "$(id -u)" != 0 ]; then
    _prefdiff_pg_log "not root: cannot install or start PostgreSQL"
    return 1
  fi
  if ! command -v pg_lsclusters >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || { _prefdiff_pg_log "no apt-get to install postgresql"; return 1; }
    _prefdiff_pg_log "installing postgresql"
    (timeout 900 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq postgresql) >/dev/null 2>&1 \
      || { _prefdiff_pg_log "apt-get install postgresql failed"; return 1; }
  fi
  line=$(pg_lsclusters -h 2>/dev/null | head -n 1)
  if [ -z "$line" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    _prefdiff_pg_log "creating cluster $version/main"
    pg_createcluster "$version" main >/dev/null 2>&1 || { _prefdiff_pg_log "pg_createcluster failed"; return 1; }
    line=$(pg_lsclusters -h 2>/dev/null | head -n 1)
  fi
  read -r version cluster port status _ <<<"$line"
  if [ "$status" != "online" ]; then
    _prefdiff_pg_log "starting cluster $version/$cluster on port $port"
    pg_ctlcluster "$version" "$cluster" start >/dev/null 2>&1 || true
  fi
  local i
  for i in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.5
  done
  pg_isready -q -h 127.0.0.1 -p "$port" || { _prefdiff_pg_log "PostgreSQL not ready on 127.0.0.1:$port"; return 1; }
  password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -p "$port" -d postgres >/dev/null 2>&1 <<SQL || { _prefdiff_pg_log "could not create role/database"; return 1; }
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$role') THEN
    CREATE ROLE $role LOGIN PASSWORD '$password';
  ELSE
    ALTER ROLE $role LOGIN PASSWORD '$password';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $db OWNER $role' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$db')\gexec
SQL
  PGPASSWORD="$password" psql -q -h 127.0.0.1 -p "$port" -U "$role" -d "$db" -c "SELECT 1" >/dev/null 2>&1 \
    || { _prefdiff_pg_log "cannot log in as $role over 127.0.0.1:$port"; return 1; }
  echo "postgresql+psycopg://$role:$password@127.0.0.1:$port/$db"
}

if _prefdiff_pg_url=$(_prefdiff_pg_setup); then
  export PREFDIFF_TEST_PG_URL="$_prefdiff_pg_url"
  _prefdiff_pg_log "PostgreSQL ready; PREFDIFF_TEST_PG_URL exported"
else
  _prefdiff_pg_log "PostgreSQL unavailable; the label app's PostgreSQL tests will skip"
fi
unset _prefdiff_pg_url
true
