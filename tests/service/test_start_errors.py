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
