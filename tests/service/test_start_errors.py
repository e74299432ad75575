"""A bad setting stops `python -m service` with a one-line message and exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env,expected", [
    ({"GAN_PORT": "eighty"}, "GAN_PORT"),
    ({"GAN_MAX_BATCH": "0"}, "GAN_MAX_BATCH"),
    ({"GAN_DEVICE": "cpu", "GAN_DTYPE": "float16"}, "GAN_DTYPE=float16 needs a CUDA device"),
    pytest.param({"GAN_DEVICE": "cuda"}, "GAN_DEVICE=cuda asked for, but PyTorch sees no CUDA GPU; use GAN_DEVICE=cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_setting_gives_a_message_not_a_traceback(env, expected):
    res = subprocess.run([sys.executable, "-m", "service"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=60)
    assert res.returncode == 2
    assert expected in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(("found", "workers"), [("cpu", "2"), ("cuda", "4")])
def test_python_m_service_resolves_auto_settings_for_the_device_it_found(
        found: str, workers: str, monkeypatch) -> None:  # noqa: ANN001
    """GAN_DEVICE=auto and GAN_WORKERS=0 become the device found and its worker count, for every
    worker to read; so a GPU found by auto is never treated as a CPU (pinning, nice, threads)."""
    import service.__main__ as entry
    import service.settings as settings_module

    # set, not deleted: monkeypatch then restores what was there before load_settings writes them
    monkeypatch.setenv("GAN_DEVICE", "auto")
    monkeypatch.setenv("GAN_WORKERS", "0")
    monkeypatch.setattr(settings_module, "available_cores", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(entry, "resolve_device", lambda name, flag: torch.device(found))
    monkeypatch.setattr(entry, "resolve_dtype", lambda dtype, device: None)
    settings = entry.load_settings()
    assert (settings.device, os.environ["GAN_DEVICE"]) == (found, found)
    assert (str(settings.workers), os.environ["GAN_WORKERS"]) == (workers, workers)
    monkeypatch.setenv("GAN_WORKERS", "1")  # one worker: only a CPU pins its event loop
    assert (entry.load_settings().cpu_split() is not None) == (found == "cpu")


def test_the_environment_is_left_as_it_was() -> None:
    """The test above writes GAN_DEVICE and GAN_WORKERS through load_settings: none may leak into
    the tests after it (a leaked GAN_DEVICE=cuda would send them to a GPU that is not there)."""
    assert os.environ.get("GAN_DEVICE") in (None, "auto", "cpu") and os.environ.get("GAN_WORKERS") in (None, "0")


@pytest.mark.parametrize("gpu", [False, True])
def test_an_app_made_with_device_auto_pins_its_cores_only_without_a_gpu(monkeypatch: pytest.MonkeyPatch,
                                                                          gpu: bool) -> None:
    # create_app used directly (not python -m service, which resolves auto first): a GPU host's
    # engines must not be pinned and its event loop not reniced as a CPU host's are
    from service.settings import Settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    settings = Settings(device="auto", workers=1, engine="process", pin_cpus=True)
    assert (settings.cpu_split() is None) is gpu


def test_workers_without_a_writable_shared_folder_stop_with_a_message() -> None:
    """Several workers share a folder (metrics, rate limits, reloads) made in TMPDIR unless
    PROMETHEUS_MULTIPROC_DIR names one: with no usable temporary folder, a message and exit 2."""
    script = ("import sys, tempfile; tempfile.tempdir = '/nonexistent/no-tmp'; "
              "sys.argv = ['service', '--workers', '2', '--device', 'cpu']; "
              "from service.__main__ import main; main()")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**env, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "GAN_WORKERS=2 needs a writable folder" in res.stderr and "PROMETHEUS_MULTIPROC_DIR" in res.stderr


def test_a_port_in_use_stops_start_up_at_once_with_one_line(tmp_path):
    """uvicorn binds after the app's start-up (every model loaded and warmed, about 10 s): the
    address is tried first, so the message comes before any model loads. Both worker layouts."""
    import socket
    import time

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            started = time.monotonic()
            res = subprocess.run([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "PYTHONPATH": str(ROOT), "GAN_WORKERS": workers,
                                      "GAN_WEIGHTS_DIR": str(ROOT / "weights")})
            assert res.returncode == 3, res.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in res.stderr and "Traceback" not in res.stderr
            assert "loaded" not in res.stderr  # no model was loaded first
            assert time.monotonic() - started < 30


def test_the_cpu_limit_is_read_from_cgroup_v2_and_v1(tmp_path, monkeypatch):
    """A Kubernetes CPU limit caps the cores the service sizes its threads for: cgroup v2's
    cpu.max, and v1's cfs files (before, v1 nodes got the whole node's cores)."""
    import os

    from service.settings import available_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    v2.mkdir()
    (v2 / "cpu.max").write_text("800000 100000\n")
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    none.mkdir()
    assert (available_cores(v2), available_cores(v1), available_cores(none)) == (8, 3, 64)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    (v2 / "cpu.max").write_text("max 100000\n")
    assert (available_cores(v1), available_cores(v2)) == (64, 64)
