"""Drive a server with wrk (a C load generator: the client costs almost no CPU, unlike a Python
load generator on the same cores) and read its figures back as a LoadReport.

wrk runs a Lua script made here: each request posts `{"label": i % 10, "n": n, "seed": i}` to
/generate (or, for a server with another protocol such as Triton's, its own body template with
the same three values, to its own path; or, with method GET, asks for `/generate?label=..&n=..&seed=..`),
the `response` hook counts statuses per thread, and `done` prints one JSON line with
the request count, duration, latency percentiles and the status counts.

`find_wrk()` looks on PATH, then for a binary unpacked from Debian's .deb into
`.carry/wrk/usr/bin/wrk` (a GPU machine reaches no package registry: bench/gpu.sh unpacks it).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.loadgen import LoadReport

REPO = Path(__file__).resolve().parent.parent
CARRIED_WRK = REPO / ".carry" / "wrk" / "usr" / "bin" / "wrk"

SCRIPT = r"""
local n = %(n)d
local path = "%(path)s"
local counter = 0
local threads = {}
statuses = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = id * 100000007
end

request = function()
  counter = counter + 1
  local text = string.format(%(body_format)s, %(body_args)s)
  if "%(method)s" == "GET" then
    return wrk.format("GET", path .. "?" .. text)
  end
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, text)
end

response = function(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

done = function(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do merged[k] = (merged[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(merged) do table.insert(parts, string.format('"%%s": %%d', k, v)) end
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p95_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "mean_us": %%.1f, "socket_errors": %%d, "statuses": {%%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ", ")))
end
"""


GENERATE_BODY = '{"label": %(label)d, "n": %(n)d, "seed": %(seed)d}'
GENERATE_QUERY = "label=%(label)d&n=%(n)d&seed=%(seed)d"  # the same request as GET /generate's query string
_LUA_VALUES = {"label": "counter % 10", "n": "n", "seed": "counter"}
_PLACEHOLDER = re.compile(r"%\((label|n|seed)\)d")


def lua_body(template: str) -> tuple[str, str]:
    """A body template (Python %-format: %(label)d, %(n)d and %(seed)d, a literal percent as %%)
    -> (a Lua format string literal, its arguments in order), for string.format in the script."""
    pieces = _PLACEHOLDER.split(template)  # text, key, text, key, ..., text
    texts, keys = pieces[0::2], pieces[1::2]
    lua_format = "%d".join(texts)  # a literal % is %% in both Python's % and Lua's string.format
    return json.dumps(lua_format), ", ".join(_LUA_VALUES[k] for k in keys)


def find_wrk() -> str | None:
    found = shutil.which("wrk")
    if found:
        return found
    return str(CARRIED_WRK) if CARRIED_WRK.is_file() else None


def run_wrk(base_url: str, n: int, connections: int, duration_s: float, threads: int | None = None,
            path: str = "/generate", timeout_s: float = 30.0, body: str = GENERATE_BODY,
            method: str = "POST") -> LoadReport:
    """One closed-loop wrk run: `connections` clients posting back to back for duration_s
    (method GET: `body` is the query string's template, GENERATE_QUERY for /generate).

    Only 200 answers count as served requests and images; every other status is an error, by
    status code (wrk's own latency figures cover all answers).
    """
    wrk = find_wrk()
    if wrk is None:
        raise RuntimeError("wrk not found: apt-get install wrk (or unpack its .deb into .carry/wrk)")
    if method not in ("GET", "POST"):
        raise ValueError(f"method {method!r}: GET or POST")
    threads = threads or max(1, min(2, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        body_format, body_args = lua_body(body)
        fh.write(SCRIPT % {"n": n, "path": path, "body_format": body_format, "body_args": body_args,
                           "method": method})
        script = fh.name
    try:
        seconds = max(1, round(duration_s))  # wrk takes whole seconds
        cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s:g}s",
               "-s", script, base_url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False)
    finally:
        Path(script).unlink(missing_ok=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    seconds = data["duration_us"] / 1e6
    statuses = {k: int(v) for k, v in data["statuses"].items()}
    ok = statuses.pop("200", 0)
    errors = {f"http_{k}": v for k, v in sorted(statuses.items())}
    if data["socket_errors"]:
        errors["socket"] = int(data["socket_errors"])
    # No answer inside the window (a window shorter than one answer): wrk reports its empty
    # latency histogram as 0 ms, which would read as instant; say "not measured" instead.
    ms = {k: data[f"{k}_us"] / 1000 if data["requests"] else math.nan
          for k in ("p50", "p90", "p95", "p99", "mean", "max")}
    report = LoadReport(
        requests=ok, images=ok * n, seconds=seconds, errors=errors,
        p50_ms=ms["p50"], p95_ms=ms["p95"], p99_ms=ms["p99"], mean_ms=ms["mean"],
        extra={"client": "wrk", "p90_ms": ms["p90"], "max_ms": ms["max"], "answers": data["requests"]},
    )
    return report
