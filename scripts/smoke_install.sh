#!/usr/bin/env bash
# Packaging smoke test, run by .ci/run after `make test`:
#   1. the bare install, as the image does it: the files docker/Dockerfile's `build` stage COPYs,
#      installed with its `pip install` spec (today `.`, no extras; scripts/image_sources.py
#      reads both) under the image's pins (constraints.txt) into a new venv that holds only
#      torch. Its dependencies must then be exactly the pinned ones (`pip check`; every package
#      besides torch's own wheels pinned at the installed version, every pin installed), since
#      the image installs constraints.txt as the list and then the project with --no-deps. Then
#      `python -m service` from that venv, run outside the checkout so that nothing is imported
#      from the source tree: /readyz answers 200 and POST /generate gives a PNG. One difference
#      from the image: torch comes from pip's configured index (CI: a local CPU wheel), not from
#      the Dockerfile's index.
#   2. `make serve PORT=<free port>` gives a PNG too.
# A runtime import that only the dev or train extra provides, a file missing from the wheel, a
# package the Dockerfile does not COPY, or a dependency that constraints.txt misses or no longer
# needs fails step 1, with the server's log or the differences.
#
# Environment: PYTHON (python3), TORCH_VERSION (2.13.0, as in the Makefile and the Dockerfile),
# SMOKE_READY_TIMEOUT (seconds to wait for /readyz, 300), SMOKE_SKIP_MAKE_SERVE=1 to skip step 2.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
READY_TIMEOUT=${SMOKE_READY_TIMEOUT:-300}
CONSTRAINTS=$REPO/constraints.txt

WORK=$(mktemp -d "${TMPDIR:-/tmp}/smoke-install.XXXXXX")
SERVER_PGID=""
cleanup() {
    # Each server runs in its own session (setsid): end its whole process group, `make` included.
    if [ -n "$SERVER_PGID" ]; then
        kill -TERM -- "-$SERVER_PGID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 -- "-$SERVER_PGID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$SERVER_PGID" 2>/dev/null || true
        SERVER_PGID=""
    fi
}
trap 'cleanup; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

step() { printf '== smoke: %s (%ss)\n' "$*" "$SECONDS"; }
fail() {
    printf 'smoke_install: FAILED: %s\n' "$1" >&2
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        printf -- '--- last lines of %s ---\n' "$2" >&2
        if [ -s "$2" ]; then tail -n 40 "$2" >&2; else echo "(empty)" >&2; fi
    fi
    exit 1
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server LOG CMD...: run CMD in a new session, its output in LOG.
start_server() {
    local log=$1
    shift
    setsid "$@" >"$log" 2>&1 </dev/null &
    SERVER_PGID=$!
}

# check_server PORT LOG WHAT: wait for /readyz, then POST /generate and check the answer is a PNG.
check_server() {
    local port=$1 log=$2 what=$3
    "$PYTHON" - "$port" "$READY_TIMEOUT" "$SERVER_PGID" <<'EOF' || fail "$what did not serve a PNG on port $port" "$log"
import json, os, sys, time, urllib.error, urllib.request

port, timeout, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + timeout
status = None
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"the server exited before /readyz answered 200 (last status {status})")
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = None
    if status == 200:
        break
    time.sleep(0.5)
else:
    sys.exit(f"/readyz not 200 within {timeout:.0f} s (last status {status})")
request = urllib.request.Request(
    base + "/generate",
    data=json.dumps({"label": "sneaker", "n": 4}).encode(),
    headers={"content-type": "application/json"},
)
try:
    with urllib.request.urlopen(request, timeout=60) as response:
        status, kind, body = response.status, response.headers.get("content-type"), response.read()
except urllib.error.HTTPError as exc:
    sys.exit(f"POST /generate answered {exc.code}: {exc.read()[:500]!r}")
if status != 200 or kind != "image/png" or not body.startswith(b"\x89PNG\r\n\x1a\n"):
    sys.exit(f"POST /generate: status {status}, content-type {kind}, body starts {body[:16]!r}")
print(f"/readyz 200, POST /generate 200 image/png ({len(body)} bytes)")
EOF
}

# --- 1. the bare install -------------------------------------------------------------------------
step "bare venv in $WORK/venv"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
step "pip install -c constraints.txt torch==$TORCH_VERSION"
timeout 900 "$VPY" -m pip install --quiet -c "$CONSTRAINTS" "torch==$TORCH_VERSION" >"$WORK/pip-torch.log" 2>&1 ||
    fail "pip install torch==$TORCH_VERSION" "$WORK/pip-torch.log"
spec=$("$PYTHON" scripts/image_sources.py "$WORK/src") || fail "could not read docker/Dockerfile's build stage"
step "pip install -c constraints.txt $spec (the Dockerfile's, from its COPY sources: $(cd "$WORK/src" && echo *))"
timeout 600 "$VPY" -m pip install --quiet -c "$CONSTRAINTS" "$WORK/src${spec#.}" >"$WORK/pip.log" 2>&1 ||
    fail "pip install $spec" "$WORK/pip.log"

step "its dependencies are exactly constraints.txt"
"$VPY" -m pip check >"$WORK/pip-check.log" 2>&1 || fail "pip check" "$WORK/pip-check.log"
"$VPY" -m pip list --format=json >"$WORK/installed.json" 2>"$WORK/pip-list.log" ||
    fail "pip list" "$WORK/pip-list.log"
"$PYTHON" - "$CONSTRAINTS" "$WORK/installed.json" >"$WORK/closure.log" 2>&1 <<'EOF' ||
import json, re, sys

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

pins = {}
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        name, _, version = line.partition("==")
        pins[norm(name)] = version.strip()
# Left out of constraints.txt on purpose (its header says why), and the venv's own tools.
skip = re.compile(r"torch|triton|nvidia-.*|cuda-.*|cgan-service|pip|setuptools|wheel")
installed = {norm(d["name"]): d["version"] for d in json.load(open(sys.argv[2]))}
installed = {n: v for n, v in installed.items() if not skip.fullmatch(n)}
problems = [f"{n} {v} is installed but not pinned" for n, v in installed.items() if n not in pins]
problems += [f"{n} is pinned but not installed" for n in pins if n not in installed]
problems += [f"{n} {installed[n]} is installed, {v} pinned" for n, v in pins.items() if installed.get(n, v) != v]
if problems:
    print("\n".join(sorted(problems)))
    sys.exit("regenerate constraints.txt as its header says")
print(f"{len(pins)} pins, all installed, nothing else")
EOF
    fail "constraints.txt is not the dependency closure of the install" "$WORK/closure.log"
cat "$WORK/closure.log"

# Run from an empty folder: with the checkout as the working directory, `python -m service`
# would import the source tree instead of what pip installed.
mkdir "$WORK/run"
where=$(cd "$WORK/run" && "$VPY" -c 'import service; print(service.__file__)')
case "$where" in
    "$WORK/venv/"*) ;;
    *) fail "service imported from $where, not from the bare venv" ;;
esac

port=$(free_port)
step "python -m service from the bare venv on port $port"
start_server "$WORK/bare.log" env -C "$WORK/run" \
    GAN_HOST=127.0.0.1 GAN_PORT="$port" GAN_WEIGHTS_DIR="$REPO/weights" "$VPY" -m service
check_server "$port" "$WORK/bare.log" "python -m service (bare install)"
cleanup

# --- 2. make serve -------------------------------------------------------------------------------
if [ "${SMOKE_SKIP_MAKE_SERVE:-0}" != 1 ]; then
    port=$(free_port)
    step "make serve PORT=$port"
    start_server "$WORK/make-serve.log" make serve PORT="$port"
    check_server "$port" "$WORK/make-serve.log" "make serve"
    cleanup
fi
step "passed"
