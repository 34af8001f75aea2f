#!/usr/bin/env bash
# Sourced by the scripts that need command-line tools from PyPI: makes target/tools-venv with
# them (once) and puts it first on PATH. Versions are pinned so CI sees what was tested.
tools_venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/tools-venv"
if [ ! -f "$tools_venv/.complete" ]; then
    python3 -m venv "$tools_venv"
    "$tools_venv/bin/pip" install --quiet --disable-pip-version-check \
        'kubernetes-validate==1.*' 'yamllint==1.*' 'buf-bin==1.75.*' \
        'grpcio==1.*' 'grpcio-tools==1.*' 'grpcio-status==1.*' 'grpcio-health-checking==1.*'
    touch "$tools_venv/.complete"
fi
export PATH="$tools_venv/bin:$PATH"
