#!/usr/bin/env bash
# Mutation testing with mutmut (PyPI) over the code whose answers the tests check by number:
# the metrics, the losses, the distributed helpers, the batcher and the inference runner.
# Not part of `make test`: it runs the selected tests once per mutant (tens of minutes on 2 cores).
#
#   make mutation                      # every group
#   make mutation MUTATION_GROUPS="losses"      # one or more of: metrics losses service distributed
#
# `distributed` is not in the default set: its tests run the code in spawned gloo processes,
# which mutmut's coverage does not see ("no test case for any mutant"); the hand-made mutants
# in docs/testing.md cover it.
#
# mutmut writes a `mutants/` tree beside the sources, so it runs in a copy of the working tree
# (tracked and untracked, not ignored, files) under $MUTATION_DIR, never in the checkout others use.
# Inspect a survivor afterwards with: cd $MUTATION_DIR/<group> && mutmut show <name>
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="${MUTATION_DIR:-${TMPDIR:-/tmp}/cgan-mutation}"
GROUPS_TO_RUN="${MUTATION_GROUPS:-metrics losses service}"
MUTMUT="$(dirname "$PY")/mutmut"

"$PY" -c "import mutmut" 2>/dev/null || "$PY" -m pip install --quiet "mutmut>=3.3"

sources() {
  case "$1" in
    metrics) echo '"training/metrics.py"' ;;
    losses) echo '"training/losses.py"' ;;
    distributed) echo '"training/distributed.py"' ;;
    service) echo '"service/batcher.py", "service/inference.py"' ;;
  esac
}
tests() {
  case "$1" in
    metrics) echo '"tests/training/test_metrics.py", "tests/training/test_evaluate.py"' ;;
    losses) echo '"tests/training/test_losses.py"' ;;
    distributed) echo '"tests/training/test_distributed.py", "tests/training/test_loop.py::test_torchrun_two_cpu_processes_with_gloo"' ;;
    service) echo '"tests/service/test_batching.py", "tests/service/test_pixels.py", "tests/service/test_api.py"' ;;
  esac
}

for group in $GROUPS_TO_RUN; do
  dir="$OUT/$group"
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dir" 2>/dev/null || true)
  cat >> "$dir/pyproject.toml" <<TOML

[tool.mutmut]
source_paths = [$(sources "$group")]
pytest_add_cli_args_test_selection = [$(tests "$group")]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]
TOML
  echo "== $group: mutmut in $dir"
  (cd "$dir" && "$MUTMUT" run >/dev/null 2>&1 || true
   "$MUTMUT" results --all true > results.txt 2>/dev/null || "$MUTMUT" results > results.txt
   killed=$(grep -c ': killed' results.txt || true); survived=$(grep -c ': survived' results.txt || true)
   untested=$(grep -c ': no tests' results.txt || true); timeout=$(grep -c ': timeout' results.txt || true)
   echo "$group: killed $killed, survived $survived, no tests $untested, timeout $timeout"
   grep ': survived' results.txt || true)
done
