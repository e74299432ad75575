"""Settings the operations probe found accepted though they could not work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=60)


@pytest.mark.parametrize("field", ["slice_ms", "max_wait_ms", "request_timeout_s", "refusal_pause_ms",
                                   "refusal_eager_ms", "refusal_max_pause_ms", "body_timeout_s",
                                   "rate_limit_images_per_s"])
@pytest.mark.parametrize("value", ["inf", "nan", "1e300"])
def test_every_float_setting_refuses_inf_nan_and_absurd_values(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_an_infinite_request_timeout_stops_start_up_with_a_message() -> None:
    res = _start({"GAN_REQUEST_TIMEOUT_S": "inf"})
    assert res.returncode == 2
    assert "GAN_REQUEST_TIMEOUT_S" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("field", ["host", "weights_dir", "default_model"])
@pytest.mark.parametrize("value", ["", "  "])
def test_host_weights_dir_and_default_model_refuse_an_empty_value(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match="empty"):
        Settings(**{field: value})


def test_an_empty_host_stops_start_up_with_a_message() -> None:
    res = _start({"GAN_HOST": ""})
    assert res.returncode == 2
    assert "GAN_HOST" in res.stderr and "empty" in res.stderr and "Traceback" not in res.stderr
