#!/usr/bin/env bash
# Guards the public contract: `buf lint` on proto/, and `buf breaking` against the committed
# baseline in contract/baseline/, so a change that would break generated clients fails CI.
# To publish an additive change, copy proto/ over contract/baseline/ in the same commit.
# A self-test first proves the breaking check is live: a copy with a field renumbered must fail.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python-tools.sh

buf lint
buf breaking proto --against contract/baseline

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r proto/. "$scratch/"
sed -i 's/string sql = 1;/string sql = 99;/' "$scratch/dataaccess/v1/data_access.proto"
grep -q 'string sql = 99;' "$scratch/dataaccess/v1/data_access.proto"
if buf breaking "$scratch" --against contract/baseline >/dev/null 2>&1; then
    echo "check-contract: buf breaking did not catch a renumbered field" >&2
    exit 1
fi
echo "check-contract: ok"
