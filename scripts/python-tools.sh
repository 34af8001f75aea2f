#!/usr/bin/env bash
# Sourced by the scripts that need command-line tools from PyPI: makes target/tools-venv with
# them (once) and puts it first on PATH. Versions are pinned so CI sees what was tested.
tools_venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/tools-venv"
if [ ! -f "$tools_venv/.complete" ]; then
    python3 -m venv "$tools_venv"
    "$tools_venv/bin/pip" install --quiet --disable-pip-version-check \
        'kubernetes-validate==1.*' 'yamllint==1.*' 'buf-bin==1.75.*' \
        'grpcio==1.*' 'grpcio-tools==1.*' 'grpcio-status==1.*' 'grpcio-health-checking==1.*' \
        'jsonschema==4.*' 'pyyaml==6.*'
    # The Compose file schema, as published inside docker-compose's last Python release (the
    # package itself is not installed; its wheel is only unpacked for the schema).
    "$tools_venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        --dest "$tools_venv/wheels" 'docker-compose==1.29.2'
    "$tools_venv/bin/python" - "$tools_venv" <<'PY'
import sys, zipfile, glob
venv = sys.argv[1]
wheel = glob.glob(f"{venv}/wheels/docker_compose-1.29.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(f"{venv}/compose_spec.json", "wb") as out:
    out.write(z.read("compose/config/compose_spec.json"))
PY
    touch "$tools_venv/.complete"
fi
export PATH="$tools_venv/bin:$PATH"
