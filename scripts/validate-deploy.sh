#!/usr/bin/env bash
# Validates deploy/ offline: yamllint on every YAML file, and every Kubernetes manifest against
# the Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors). The tools
# come from PyPI (scripts/python-tools.sh). No Docker engine is needed or used.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python-tools.sh

yamllint --strict deploy .yamllint buf.yaml

# Kubernetes 1.29 is the first with native sidecars (restartPolicy: Always init containers).
# PodMonitor is a Prometheus Operator CRD, for which the tool has no schema: it warns, and
# yamllint above is all that checks it.
for version in 1.29.0 1.33.0; do
    kubernetes-validate --strict --quiet -k "$version" deploy/kubernetes/*.yaml
done

# What the compose file and the Dockerfile refer to must exist.
for path in deploy/Dockerfile deploy/compose/prometheus.yml deploy/compose/grafana-datasource.yml \
    deploy/compose/grafana-dashboards.yml deploy/grafana/pgsidecar-dashboard.json Cargo.lock; do
    [ -e "$path" ] || { echo "validate-deploy: missing $path" >&2; exit 1; }
done
echo "validate-deploy: ok"
