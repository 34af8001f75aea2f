#!/usr/bin/env bash
# Validates deploy/ offline: yamllint on every YAML file, every Kubernetes manifest against the
# Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors), and the compose
# file against the Compose specification's schema. The tools
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

# The compose file against the Compose specification's JSON schema (unknown keys are errors).
python - "$tools_venv/compose_spec.json" deploy/docker-compose.yml <<'PY'
import json, sys
import jsonschema, yaml
schema = json.load(open(sys.argv[1]))
errors = list(jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(open(sys.argv[2]))))
for e in errors:
    print(f"{sys.argv[2]}: {e.json_path}: {e.message}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY

# What the compose file and the Dockerfile refer to must exist.
for path in deploy/Dockerfile deploy/compose/prometheus.yml deploy/compose/grafana-datasource.yml \
    deploy/compose/grafana-dashboards.yml deploy/grafana/pgsidecar-dashboard.json Cargo.lock; do
    [ -e "$path" ] || { echo "validate-deploy: missing $path" >&2; exit 1; }
done
echo "validate-deploy: ok"
