#!/bin/sh
# Runs once, when the PostgreSQL volume is new (docker-entrypoint-initdb.d): the role the app
# connects as. Migrations run as the database owner (POSTGRES_USER), which owns the tables and
# grants this role row access; the app's role has no BYPASSRLS, so row-level security holds.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set app_password="$POSTGRES_APP_PASSWORD" <<'SQL'
CREATE ROLE fragments_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
  PASSWORD :'app_password';
SQL
