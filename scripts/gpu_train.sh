#!/usr/bin/env bash
# The prepared GPU training slot (#15, #16): the shipped recipes trained side by side on one GPU
# inside a time budget, exported, and brought back under $OUT. One script, about 8 minutes on a
# GPU machine; `--device cpu --budget-s 30` runs it end to end here as a check.
#
#   scripts/gpu_train.sh --prepare                  # here: the data into .carry/data (git-ignored)
#   scripts/gpu_train.sh [--device cuda|cpu] [--budget-s 420] [RECIPE ...]
#
# Default recipes: fashion-mnist-cwgangp, fashion-mnist-acgan (both on the train split, the test
# split held out) and cifar10-dcgan-projection. Each trains in its own process (the loops are
# launch-bound, so three share one GPU well) under `timeout -s TERM`: a run still going at the
# budget writes its checkpoint and stops, and is exported at that step. What comes back
# ($OUT holds at most 8 files of 16 MiB): per recipe its export (config.json and
# generator.safetensors, named <recipe>.config.json and <recipe>.safetensors) and one log of
# everything. A training checkpoint (35-60 MB) cannot come back, so a GPU run must finish its
# schedule inside one slot to be continued anywhere else; its log says which step it reached.
# Back here: `scripts/gpu_train.sh --unpack DIR` puts the exports into weights-gpu/<recipe>/ for
# `python -m training evaluate` before anything replaces weights/.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
BUDGET=420
PREPARE=0
UNPACK=""
RECIPES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --budget-s) BUDGET="$2"; shift 2 ;;
        --prepare) PREPARE=1; shift ;;
        --unpack) UNPACK="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "scripts/gpu_train.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) RECIPES+=("$1"); shift ;;
    esac
done
[ ${#RECIPES[@]} -eq 0 ] && RECIPES=(fashion-mnist-cwgangp fashion-mnist-acgan cifar10-dcgan-projection)
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
FASHION_SRC=/usr/share/datasets/fashion-mnist
CIFAR_SRC=${CIFAR_TARBALL:-../shared/data/cifar10-images.tar.gz}

if [ "$PREPARE" = 1 ]; then
    mkdir -p .carry/data/fashion-mnist
    cp "$FASHION_SRC"/*.gz .carry/data/fashion-mnist/ || { echo "no Fashion-MNIST in $FASHION_SRC (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
    cp "$CIFAR_SRC" .carry/data/cifar10-images.tar.gz || { echo "no CIFAR-10 tarball at $CIFAR_SRC" >&2; exit 1; }
    du -sh .carry/data
    exit 0
fi

if [ -n "$UNPACK" ]; then
    for config in "$UNPACK"/*.config.json; do
        name=$(basename "$config" .config.json)
        mkdir -p "weights-gpu/$name"
        cp "$config" "weights-gpu/$name/config.json"
        cp "$UNPACK/$name.safetensors" "weights-gpu/$name/generator.safetensors"
        echo "weights-gpu/$name"
    done
    exit 0
fi

OUT=${OUT:-runs/gpu-train-$(date -u +%Y%m%dT%H%M%SZ)}
WORK=${WORK:-/tmp/gpu-train}
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/gpu-train.log") 2>&1
started=$(date +%s)
echo "device $DEVICE, budget ${BUDGET} s per run, recipes: ${RECIPES[*]}"
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1

# Data: what was carried, else where this machine keeps it.
FASHION=.carry/data/fashion-mnist
[ -d "$FASHION" ] || FASHION=$FASHION_SRC
CIFAR_TGZ=.carry/data/cifar10-images.tar.gz
[ -f "$CIFAR_TGZ" ] || CIFAR_TGZ=$CIFAR_SRC

pids=()
for recipe in "${RECIPES[@]}"; do
    args=(--recipe "$recipe" --out "$WORK/runs/$recipe" --device "$DEVICE" --resume --no-progress --set bf16=true)
    case "$recipe" in
        cifar10-*)
            if [ ! -d "$WORK/cifar10/train" ]; then
                mkdir -p "$WORK/cifar10" && tar -xzf "$CIFAR_TGZ" -C "$WORK/cifar10" || { echo "no CIFAR-10 data" >&2; continue; }
            fi
            args+=(--data-dir "$WORK/cifar10") ;;
        fashion-mnist-*) args+=(--data-dir "$FASHION" --set split=train) ;;
    esac
    # The budget ends a run the graceful way (SIGTERM: checkpoint, then exit); KILL 30 s later.
    timeout -s TERM -k 30 "$BUDGET" $PY -m training train "${args[@]}" > "$WORK/$recipe.log" 2>&1 &
    pids+=($!)
    echo "started $recipe (pid $!)"
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "training done after $(( $(date +%s) - started )) s"

for recipe in "${RECIPES[@]}"; do
    echo; echo "== $recipe"; tail -n 4 "$WORK/$recipe.log"
    tail -n 1 "$WORK/runs/$recipe/metrics.jsonl" 2>/dev/null
    if $PY -m training export "$WORK/runs/$recipe" --name "$recipe" --weights-dir "$WORK/weights" --force > "$WORK/$recipe.export.log" 2>&1; then
        cp "$WORK/weights/$recipe/config.json" "$OUT/$recipe.config.json"
        cp "$WORK/weights/$recipe/generator.safetensors" "$OUT/$recipe.safetensors"
        echo "exported: $OUT/$recipe.safetensors ($(du -h "$OUT/$recipe.safetensors" | cut -f1))"
    else
        echo "export failed:"; cat "$WORK/$recipe.export.log"
    fi
done
echo; echo "done in $(( $(date +%s) - started )) s"
