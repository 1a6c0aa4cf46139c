#!/usr/bin/env bash
# Starts the machine's PostgreSQL cluster (installed by setup-system.sh) on loopback and
# makes a `shoal` superuser role for the tests, then prints the URL they use:
#   SHOAL_TEST_DATABASE_URL=postgres://shoal:shoal@127.0.0.1:5432/postgres
# Tests create and drop their own databases in it, so they run in parallel safely.
set -euo pipefail
# Only the URL may reach stdout (callers capture it): pg_ctlcluster prints notices such as
# "Removed stale pid file." to stdout on some machines, which once ended up inside the URL.
exec 3>&1 1>&2
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
cluster=main
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -q "^$version $cluster$"; then
  pg_createcluster "$version" "$cluster" >/dev/null 3>&-
fi
if ! pg_lsclusters -h | grep "^$version $cluster" | grep -q online; then
  pg_ctlcluster "$version" "$cluster" start 3>&-  # the server must not hold the caller's pipe open
fi
for _ in $(seq 1 50); do
  su postgres -c "psql -qAt -c 'select 1'" >/dev/null 2>&1 && break
  sleep 0.2
done
su postgres -c "psql -qAt -c \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='shoal') THEN CREATE ROLE shoal LOGIN SUPERUSER PASSWORD 'shoal'; END IF; END \\\$\\\$;\"" >/dev/null
echo "postgres://shoal:shoal@127.0.0.1:5432/postgres" >&3
