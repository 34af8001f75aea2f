#!/usr/bin/env bash
# Generates Python stubs for dataaccess.v1 into gen/ from the repository's proto/.
# google.rpc.Status comes from googleapis-common-protos (a grpcio-status dependency), so only
# the contract itself is generated.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto="$here/../../proto"
mkdir -p "$here/gen"
python -m grpc_tools.protoc -I "$proto" --python_out="$here/gen" --grpc_python_out="$here/gen" \
    "$proto/dataaccess/v1/data_access.proto"
