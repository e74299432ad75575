#!/usr/bin/env bash
# Make one virtual environment per serving framework that bench.serve compares against, so that
# their pinned dependencies (pydantic, starlette, grpc, ...) never touch the project's .venv:
#
#   bash bench/baselines.sh [ray bentoml triton]      # default: all three
#
# Each goes to .bench-venvs/NAME (git-ignored) and gets only the framework. torch, numpy, Pillow,
# safetensors and the project's own packages come from the project's .venv through a .pth file
# placed after the venv's own site-packages, so the framework's versions win where both have a
# package, and every server runs the same torch build and the same prepared forward.
# bench.serve finds .bench-venvs/NAME/bin/python by itself (--only ray,bentoml,triton).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MAIN_PY=${MAIN_PY:-$ROOT/.venv/bin/python}
[ -x "$MAIN_PY" ] || { echo "no $MAIN_PY: run 'make install' (or make test) first" >&2; exit 2; }
MAIN_SITE=$("$MAIN_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

declare -A PACKAGES=(
  [ray]="ray[serve]==2.60.0"
  [bentoml]="bentoml==1.4.40"
  [triton]="nvidia-pytriton==0.7.0"
)

[ $# -gt 0 ] || set -- ray bentoml triton
for one in "$@"; do
  spec=${PACKAGES[$one]:-}
  [ -n "$spec" ] || { echo "unknown baseline $one (ray, bentoml, triton)" >&2; exit 2; }
  venv=.bench-venvs/$one
  echo "== $one: $spec -> $venv"
  "$MAIN_PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$spec"
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # zz-: .pth files are read in name order; this one only appends paths, after the venv's own
  printf '%s\n%s\n' "$MAIN_SITE" "$ROOT" > "$site/zz-cgan-service.pth"
  "$venv/bin/python" -c "import torch, bench.work; print('$one ok, torch', torch.__version__)"
done
