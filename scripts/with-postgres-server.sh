#!/usr/bin/env bash
# Runs a command against a throw-away server of the machine's own PostgreSQL (Debian's packages;
# `pg_config --bindir`), as the tests' SQLFLOW_TEST_* server, then stops and removes it.
#   scripts/with-postgres-server.sh .venv/bin/pytest tests
set -euo pipefail
bindir=$(pg_config --bindir 2>/dev/null || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  else
    echo "no PostgreSQL server binaries found: install Debian's postgresql package" >&2
    exit 1
  fi
fi
root=$(mktemp -d /tmp/sqlflow-pg-XXXXXX)
as_owner=()
if [ "$(id -u)" = 0 ]; then  # PostgreSQL refuses to run as root
  chown postgres:postgres "$root"
  as_owner=(runuser -u postgres --)
fi
port=55432
"${as_owner[@]}" "$bindir/initdb" -D "$root/data" -A trust -U postgres >"$root/initdb.log"
"${as_owner[@]}" "$bindir/pg_ctl" -D "$root/data" -l "$root/server.log" -w \
  -o "-k $root -p $port -c listen_addresses=''" start >/dev/null
trap '"${as_owner[@]}" "$bindir/pg_ctl" -D "$root/data" -m fast -w stop >/dev/null; rm -rf "$root"' EXIT
echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on $root (port $port)"
SQLFLOW_TEST_HOST=$root SQLFLOW_TEST_PORT=$port SQLFLOW_TEST_USER=postgres "$@"
