#!/usr/bin/env bash
# The prepared GPU check of the serving path (#14): one script, about 8 minutes on a GPU machine,
# under 3 minutes with --device cpu.
#
#   bench/gpu.sh --prepare              # here, with registries: wheels and wrk's .deb into .carry/
#   bench/gpu.sh [--device cuda|cpu]    # there: gpu.log, summary.md and gpu-run.tgz (every file) under $OUT
#
# What it runs, in order, each step with its own time limit so one hang cannot eat the slot:
#   1. the CUDA tests (tests/service/test_cuda.py; they skip on a machine without a GPU);
#   2. the serving grid with wrk: n 1/16/64 x C 1/8/64/256, this service with 1 and N workers
#      against LitServe, a plain FastAPI endpoint and the in-process ceiling (bench/serve.py);
#   3. the worker sweep: GAN_WORKERS 1, 2, 4, 8 at n=1 C=256 and n=64 C=64 (on a CPU: 1 and 2
#      at n=1 C=64), one start per worker count;
#   4. the training step rate of the default recipe (bench/train.py, the loop and the reference);
#   5. on a GPU, one worker without render threads (GAN_RENDER_THREADS=0) at n=64 C=64 against
#      the sweep's one worker, and one engine alone (bench/render.py) with 0 and 4.
#   6. single images beside grids: one worker, 8 wrk connections of n=256 and a sequential n=1
#      client (bench/overload.py --mixed).
# All of it inside BUDGET_S seconds (default 480), however slow a step is.
# A GPU machine reaches no package registry: the Python packages it lacks travel as cp312 wheels
# in .carry/whl and wrk as Debian .debs in .carry/deb (both git-ignored; carry ".carry").
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
PREPARE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --prepare) PREPARE=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

if [ "$PREPARE" = 1 ]; then
    # What the GPU image lacks (its package list: the device tool's KINDS.md), for its Python 3.12.
    mkdir -p .carry/whl .carry/deb
    $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .carry/whl fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv \
        typing-inspection annotated-types annotated-doc uvicorn httptools fastapi-offline asgi-lifespan \
        sniffio typing-extensions litserve pyzmq opentelemetry-api importlib-metadata
    (cd .carry/deb && apt-get download wrk libluajit-5.1-2 libluajit-5.1-common >/dev/null)
    du -sh .carry
    exit 0
fi

# The device tool brings back at most 8 files from $OUT, two folders deep: when $OUT is given, the
# run's files (logs, JSON, tables: about 30) go to a scratch folder, and $OUT gets gpu.log,
# summary.md and all of them in gpu-run.tgz. Without $OUT they stay in runs/gpu-<time>/.
if [ -n "${OUT:-}" ]; then
    RESULTS=$OUT; OUT=$(mktemp -d /tmp/gpu-run.XXXXXX)
else
    OUT=runs/gpu-$(date -u +%Y%m%dT%H%M%SZ); RESULTS=""
fi
mkdir -p "$OUT" ${RESULTS:+"$RESULTS"}
exec > >(tee "${RESULTS:-$OUT}/gpu.log") 2>&1
started=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - started )) s)"; }
# The whole run stays inside BUDGET_S (default 480 s: a lent GPU's slot is short, and its machine
# start comes out of it too): each step gets its own limit or what is left, whichever is less, so a
# slow step shortens the later ones instead of losing the summary. Steps run in order of need.
BUDGET_S=${BUDGET_S:-480}
limit() {
    local left=$(( BUDGET_S - ($(date +%s) - started) - 10 ))  # 10 s kept for the summary
    [ "$left" -lt 5 ] && left=5
    echo $(( $1 < left ? $1 : left ))
}

step "setup"
if ! $PY -c "import fastapi, uvicorn, pydantic_settings, litserve, fastapi_offline, asgi_lifespan, sniffio" 2>/dev/null; then
    if [ -d .carry/whl ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .carry/whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
    else
        echo "missing Python packages and no .carry/whl: run bench/gpu.sh --prepare where pip works" >&2
    fi
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
if ! command -v wrk >/dev/null; then
    if ls .carry/deb/*.deb >/dev/null 2>&1; then
        for f in .carry/deb/*.deb; do dpkg -x "$f" .carry/wrk; done
        export PATH=$PWD/.carry/wrk/usr/bin:$PATH
        export LD_LIBRARY_PATH=$PWD/.carry/wrk/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
    fi
fi
command -v wrk >/dev/null && wrk --version 2>&1 | head -1 || echo "no wrk: bench.serve falls back to its Python client"
$PY - <<'EOF' | tee "$OUT/machine.json"
import json, os, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
print(json.dumps(info))
EOF

if [ "$DEVICE" = cuda ]; then
    # ours runs the GPU default (one worker per two cores, 2 to 4), ours-workers one worker; both
    # with CUDA graphs (OURS_ENV), which their rows' labels name (bench.serve.label_service_rows)
    # the ceiling tries 1 thread and every core (bench.serve keeps the better, from alternated windows)
    N="1,16,64"; C="1,8,64,256"; DUR=2; WARM=1; SWEEP="1 2 4 8"; CELLS="1:256,64:64"; CEIL="1,$(nproc)"; WORKERS=1
    SETTLE=3; ONLY="ours,ours-workers,litserve,plain,ceiling"; RENDER_AB="64:64"
    OURS_ENV="GAN_CUDA_GRAPHS=true"; TRAIN="--steps 100 --warmup 20 --variants loop,loop-bf16,reference"
    MIXED_S=8
else  # the same steps, small enough to run end to end in under 3 minutes on 2 cores: the sweep
    # measures 1 and 2 workers at n=1 C=64 (what the issue asks of a 2-core host), so the grid
    # leaves out ours-workers (2 workers there, the CPU default's own count: the same server twice)
    N="1,16"; C="1,64"; DUR=1; WARM=1; SWEEP="1 2"; CELLS="1:64"; CEIL="1,2"; WORKERS=2
    SETTLE=1; ONLY="ours,litserve,plain,ceiling"; RENDER_AB=""  # render threads are off on a CPU anyway
    OURS_ENV=""; TRAIN="--steps 2 --warmup 1 --variants loop --batch-size 32"
    MIXED_S=3
fi

step "1. CUDA tests"
timeout "$(limit 120)" $PY -m pytest -q -p no:cacheprovider tests/service/test_cuda.py --junitxml "$OUT/cuda-tests.xml" \
    || echo "CUDA tests: exit $?"

step "2. serving grid"
timeout "$(limit 300)" env $OURS_ENV $PY -m bench.serve --device "$DEVICE" --n "$N" --concurrency "$C" \
    --duration "$DUR" --warmup "$WARM" --workers "$WORKERS" --ceiling-threads "$CEIL" --settle-s "$SETTLE" \
    --only "$ONLY" --out "$OUT/serve" --json "$OUT/serve.json" \
    | tee "$OUT/serve.md" || echo "serving grid: exit $?"

step "3. worker sweep"
for w in $SWEEP; do  # one start per worker count, all the sweep's cells on it
    timeout "$(limit 60)" env $OURS_ENV $PY -m bench.serve --device "$DEVICE" --cells "$CELLS" \
        --duration "$DUR" --warmup "$WARM" --workers "$w" --settle-s "$SETTLE" --only ours-workers --out "$OUT/sweep" \
        --json "$OUT/sweep-w$w.json" > "$OUT/sweep-w$w.md" 2>&1 || echo "sweep w=$w: exit $?"
    grep -E "^ours-workers" "$OUT/sweep-w$w.md" | sed "s/^/workers=$w /"
done
step "4. training step rate"
timeout "$(limit 90)" $PY -m bench.train --device "$DEVICE" $TRAIN --json "$OUT/train.json" | tee "$OUT/train.md" \
    || echo "training rate: exit $?"

step "5. render threads"
# the A/B of render threads: one worker whose engine renders every answer after its forward,
# against the sweep's workers=1 cell above (auto: min(4, cores - 1) render threads on a GPU)
for cell in $RENDER_AB; do
    set -- ${cell/:/ }
    timeout "$(limit 45)" env $OURS_ENV GAN_RENDER_THREADS=0 $PY -m bench.serve --device "$DEVICE" --cells "$1:$2" \
        --duration "$DUR" --warmup "$WARM" --workers 1 --settle-s "$SETTLE" --only ours-workers --out "$OUT/sweep" \
        --json "$OUT/sweep-w1-r0-n$1-c$2.json" > "$OUT/sweep-w1-r0-n$1-c$2.md" 2>&1 || echo "render threads 0: exit $?"
    grep -E "^ours-workers" "$OUT/sweep-w1-r0-n$1-c$2.md" | sed "s/^/workers=1 render_threads=0 /"
done
if [ -n "$RENDER_AB" ]; then  # and one engine alone, no HTTP: answers/s with 0 and 4 render threads
    timeout "$(limit 45)" $PY -m bench.render --device "$DEVICE" --threads 0,4 --cases n64,n1 --rounds 2 --window 1 \
        --json "$OUT/render.json" | tee "$OUT/render.md" || echo "render threads: exit $?"
fi

step "6. single images beside grids"
# one worker: 8 wrk connections of n=256 back to back and a sequential n=1 client, alone then
# beside them: the small request's wait while grids fill the queue (the batcher takes turns)
timeout "$(limit 60)" $PY -m bench.overload --mixed --device "$DEVICE" --duration "$MIXED_S" --clients 8 \
    > "$OUT/mixed.json" 2>"$OUT/mixed.log" || echo "single images beside grids: exit $?"

step "summary"
{
    echo "# bench/gpu.sh --device $DEVICE, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo; echo '```'; cat "$OUT/machine.json"; echo '```'
    echo; echo "## CUDA tests"; grep -o 'tests="[0-9]*" [^>]*' "$OUT/cuda-tests.xml" 2>/dev/null | head -1
    if grep -q '^## Results' "$OUT/serve.md" 2>/dev/null; then
        echo; sed -n '/^## Results/,$p' "$OUT/serve.md"
    else  # stopped by its time limit: the cells it measured (serve.json holds them too)
        echo; echo "## Serving grid: stopped before its tables; the cells measured"; echo
        grep -E "^(ours|litserve|plain|ceiling)" "$OUT/serve.md" 2>/dev/null
    fi
    echo; echo "## Worker sweep (GAN_WORKERS)"; echo
    for f in "$OUT"/sweep-*.md; do grep -E "^ours-workers" "$f" | sed "s|^|$(basename "$f" .md) |"; done
    [ -f "$OUT/render.md" ] && { echo; echo "## Render threads, one engine (bench.render)"; echo; grep '^|' "$OUT/render.md"; }
    echo; echo "## Training"; echo; cat "$OUT/train.md"
    echo; echo "## Single images beside grids (bench.overload --mixed)"; echo
    $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({k: d[k] for k in ('small_alone', 'small_beside_large', 'large')}))" "$OUT/mixed.json" 2>/dev/null || echo "(no figures)"
} > "$OUT/summary.md"
if [ -n "$RESULTS" ]; then
    cp "$OUT/summary.md" "$RESULTS/summary.md"
    tar czf "$RESULTS/gpu-run.tgz" -C "$OUT" . && echo "wrote $RESULTS/summary.md and gpu-run.tgz (every file of the run)"
fi
echo "wrote ${RESULTS:-$OUT}/summary.md in $(( $(date +%s) - started )) s"
