#!/usr/bin/env bash
# Starts the machine's local PostgreSQL cluster if nothing answers on 127.0.0.1:5432, and
# waits (at most 30 s) until it accepts connections.
set -euo pipefail
PGBIN=/usr/lib/postgresql/15/bin
ready() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p 5432 2>/dev/null || pg_isready -q -h 127.0.0.1 -p 5432; }
if ready; then exit 0; fi
echo "PostgreSQL is down; starting the local cluster"
pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
for _ in $(seq 1 60); do
  if ready; then exit 0; fi
  sleep 0.5
done
echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
