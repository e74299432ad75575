"""A short retry storm (bench/overload.py --storm): wrk connections posting n=256 back to back
against the shipped model, beside one client alone. Asserts behaviour, not speed: nothing times
out (no 504: admission refuses what could not finish), nothing fails but 503, most of the single
client's throughput is still delivered (with one worker and with the default two), and the
service is ready afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.overload import ROOT, run_storm
from bench.wrk import find_wrk

pytestmark = pytest.mark.skipif(find_wrk() is None, reason="needs wrk (apt-get install wrk; .ci/run installs it)")


def test_a_storm_keeps_goodput_and_never_times_out(tmp_path: Path) -> None:
    # One worker: the layout whose storm behaviour is guaranteed (event loop and engine on separate
    # cores, the loop below the engine's priority). The CPU default of two workers: the next test.
    f = run_storm(ROOT / "weights", tmp_path / "server.log", duration_s=5, clients=100, n=256, single_s=4,
                  single_after_s=0, default_model="fashion-mnist-cwgangp", workers=1)
    log = (tmp_path / "server.log").read_text(errors="replace")
    statuses = f["storm"]["statuses"]
    assert statuses.get("200", 0) > 0 and statuses.get("503", 0) > 0, f  # saturated, and still serving
    assert set(statuses) <= {"200", "503"}, (f, log[-3000:])  # no 504, no 500, no socket error
    assert set(f["probe"]["statuses"]) <= {"200", "503"}, f
    # Half of one client's images/s is a floor far below what the benchmark measures (0.8 and
    # more, BENCHMARKS.md): it fails when rejections eat the forwards' CPU, as they did before
    # admission by expected wait and the engine processes (0.24).
    assert f["storm"]["goodput_ratio"] >= 0.5, f
    assert f["after"] == {"readyz": 200}, f
    assert_refusals_all_counted(f, clients=100)


def test_a_storm_against_the_default_workers_never_times_out(tmp_path: Path) -> None:
    # The CPU default (two workers on two or more cores), whose engines spread a lone client's
    # batches over idle cores: admission must not trust those fast batches once a storm takes the
    # cores back, and requests the slower queue can no longer finish are shed with 503, not left
    # to reach their deadline (before: 2-8 504s per 12 s storm; BENCHMARKS.md). With two workers
    # the storm's event loops share the engines' cores; retry pacing (GAN_REFUSAL_PAUSE_MS) keeps
    # clients that re-ask at once from spending them on refusals: 0.82-0.89 measured, 0.44-0.50
    # without it, so the same floor of one half holds here.
    f = run_storm(ROOT / "weights", tmp_path / "server.log", duration_s=5, clients=100, n=256, single_s=4,
                  single_after_s=0, default_model="fashion-mnist-cwgangp")
    log = (tmp_path / "server.log").read_text(errors="replace")
    statuses = f["storm"]["statuses"]
    assert statuses.get("200", 0) > 0 and statuses.get("503", 0) > 0, f
    assert set(statuses) <= {"200", "503"}, (f, log[-3000:])
    assert set(f["probe"]["statuses"]) <= {"200", "503"}, f
    assert f["storm"]["goodput_ratio"] >= 0.5, f
    assert f["after"] == {"readyz": 200}, f
    assert_refusals_all_counted(f, clients=100)


def assert_refusals_all_counted(f: dict, clients: int) -> None:
    """Every 503 that wrk and the probe received is in /metrics' gan_rejected_requests (summed over
    the workers); the server may have counted up to one more per connection, refused as wrk
    stopped reading."""
    seen = f["storm"]["statuses"].get("503", 0) + f["probe"]["statuses"].get("503", 0)
    counted = sum(f["server_rejections"].values())
    assert seen <= counted <= seen + clients + 1, f
    assert set(f["server_rejections"]) <= {"queue_full", "shed"}, f
    for slow in f["probe"]["slow_refusals"]:  # listed with what the service said
        assert slow["message"] and slow["ms"] > 100 and slow["request_no"] >= 1, slow
    first = f["probe"]["first_request"]  # the request that opened the probe's connection
    assert first["status"] in {"200", "503"} and first["ms"] > 0, f


def test_single_images_do_not_wait_behind_every_part_of_the_grids(tmp_path: Path) -> None:
    """Clients posting n=256 back to back (four batches each) beside one posting n=1: in arrival
    order the single image waited for every grid queued before it, about as long as a grid (p50
    1.3 s against the grids' 1.35 s, BENCHMARKS.md); taken in turns it waits for a batch or two.
    Asserted as a ratio far from both, not a speed."""
    from bench.overload import run_mixed

    f = run_mixed(ROOT / "weights", tmp_path / "server.log", duration_s=5, clients=3, n=256,
                  default_model="fashion-mnist-cwgangp")
    small, large = f["small_beside_large"], f["large"]
    assert set(small["statuses"]) == {"200"} and small["statuses"]["200"] >= 5, f
    assert set(large["statuses"]) == {"200"}, f  # three clients fit: nothing refused, nothing late
    assert small["p99_ms"] < 0.5 * large["p50_ms"], f
