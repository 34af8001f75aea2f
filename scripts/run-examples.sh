#!/usr/bin/env bash
# Runs the polyglot examples (examples/python, examples/node) against a live sidecar started
# here on free loopback ports, with bearer tokens on, then stops it with SIGTERM and expects
# exit code 0. Python tools come from PyPI, Node packages from npm (package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python-tools.sh

cargo build --quiet --bin pgsidecar
work=$(mktemp -d)
token="example-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$token" > "$work/tokens"
suffix="$$"
tables=("pgsidecar_example_py_$suffix" "pgsidecar_example_node_$suffix")
db_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

./target/debug/pgsidecar --database-url "$db_url" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --pool-max 4 --pool-min 1 --failover-pool-min 0 --auth-tokens-file "$work/tokens" \
    > "$work/stdout" 2> "$work/stderr" &
sidecar=$!
cleanup() {
    kill "$sidecar" 2>/dev/null || true
    for t in "${tables[@]}"; do psql -q "$db_url" -c "DROP TABLE IF EXISTS $t" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

addr=""
for _ in $(seq 1 100); do
    addr=$(grep -o 'grpc=[^ ]*' "$work/stdout" 2>/dev/null | cut -d= -f2 || true)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { echo "run-examples: the sidecar did not start" >&2; cat "$work/stderr" >&2; exit 1; }
export PGSIDECAR_TOKEN="$token"

bash examples/python/generate.sh
python examples/python/example.py "$addr" "${tables[0]}"
python examples/python/hostile.py "$addr"

(cd examples/node && npm ci --no-audit --no-fund --loglevel=error)
node examples/node/example.js "$addr" "${tables[1]}"

kill -TERM "$sidecar"
status=0
wait "$sidecar" || status=$?
[ "$status" -eq 0 ] || { echo "run-examples: the sidecar exited $status after SIGTERM" >&2; exit 1; }
echo "run-examples: ok"
