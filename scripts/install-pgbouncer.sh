#!/usr/bin/env bash
# Installs PgBouncer (Debian package `pgbouncer`) for the side-by-side benchmark
# (benches/compare/main.rs) when /usr/sbin/pgbouncer is missing. Needs root (apt-get).
# The package's own service is not used: the benchmark runs a private instance with a
# generated config, so the system instance is stopped if the package started one.
set -euo pipefail
if [ -x /usr/sbin/pgbouncer ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends pgbouncer
# Debian starts the packaged service where an init system runs; the benchmark needs none.
if command -v service >/dev/null 2>&1; then
  service pgbouncer stop >/dev/null 2>&1 || true
fi
/usr/sbin/pgbouncer --version
