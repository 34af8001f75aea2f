#!/usr/bin/env bash
# Regenerates src/error/sqlstate_names.rs from PostgreSQL's errcodes.txt.
# Where errcodes.txt gives one code two names, the first is kept.
set -euo pipefail
src=${1:-/usr/share/postgresql/15/errcodes.txt}
out=$(dirname "$0")/../src/error/sqlstate_names.rs
{
  echo "//! SQLSTATE codes and their PostgreSQL condition names, from PostgreSQL 15's errcodes.txt."
  echo '//! Regenerate with `scripts/gen-sqlstate-names.sh` when PostgreSQL adds codes.'
  echo
  echo '/// (SQLSTATE, condition name in upper snake case), sorted by code for binary search.'
  echo 'pub(crate) const CONDITION_NAMES: &[(&str, &str)] = &['
  grep -E '^[0-9A-Z]{5}\s+[EWS]\s+ERRCODE_\S+\s+\S+' "$src" \
    | awk '{print $1, toupper($4)}' | LC_ALL=C sort -s -u -k1,1 \
    | awk '{printf "    (\"%s\", \"%s\"),\n", $1, $2}'
  echo '];'
} > "$out"
