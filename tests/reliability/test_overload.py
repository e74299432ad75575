"""A short version of bench/overload.py: a real server driven past saturation for a few seconds."""

from __future__ import annotations

from pathlib import Path

from bench.overload import run_overload, write_tiny_model

QUEUE = 16  # images; a tiny queue so two CPU cores saturate
TIMEOUT_S = 2.0


def test_overload_sheds_load_fast_and_recovers(tmp_path: Path) -> None:
    weights = write_tiny_model(tmp_path / "weights")
    f = run_overload(weights, tmp_path / "server.log", duration_s=5, clients=32, n=8, queue_size=QUEUE,
                     max_batch=8, max_wait_ms=5, timeout_s=TIMEOUT_S)
    log = (tmp_path / "server.log").read_text()
    counts = f["counts"]
    assert counts["200"] > 0 and counts["503"] > 0, f  # saturated, and still serving
    assert counts["other"] == 0, (f, log)  # no 500, no dropped connection
    assert f["retry_after_s"]["min"] >= 1
    assert f["peak_queue_images"] <= QUEUE  # the queue stays bounded
    # Rejections do not wait for a batch: fast even as seen by a client sharing the CPU.
    assert f["rejected_503_ms"]["p50"] < 1000, f
    # Server-side, every request (accepted or not) is answered within the deadline's bucket.
    assert f["server_side"]["bucket_s"] == 2.5 and f["server_side"]["share_within"] >= 0.99, f
    assert f["rss_mb"]["after"] - f["rss_mb"]["before"] < 100, f
    assert f["after"] == {"readyz": 200, "generate": 200, "queue_images": 0.0}, f
