"""`python -m service --option value`: every setting but the secrets is an option, written into
the environment (where the workers read it) before the settings are; `--help` lists them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.common import free_port
from bench.overload import MODEL, write_tiny_model
from service.__main__ import SECRET_SETTINGS, command_line_environment
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_options_become_the_settings_variables() -> None:
    given = command_line_environment(["--max-batch", "32", "--no-channels-last", "--tf32", "--render-threads",
                                      "auto", "--weights-dir", "/srv/w", "--log-level", "warning"])
    assert given == {"GAN_MAX_BATCH": "32", "GAN_CHANNELS_LAST": "false", "GAN_TF32": "true",
                     "GAN_RENDER_THREADS": "auto", "GAN_WEIGHTS_DIR": "/srv/w", "GAN_LOG_LEVEL": "warning"}
    assert command_line_environment([]) == {}


def test_every_setting_but_the_secrets_is_an_option_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        command_line_environment(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert set(SECRET_SETTINGS) == {"api_keys", "metrics_token", "admin_token"}
    for name in Settings.model_fields:
        option = "--" + name.replace("_", "-")
        if name in SECRET_SETTINGS:
            assert f"{option} " not in text and "GAN_" + name.upper() in text  # named as env-only
        else:
            assert option in text, option
    # each option's help is its field's docstring (a field without one would show none)
    assert all(field.description for field in Settings.model_fields.values())
    assert "images per generator forward" in text


@pytest.mark.parametrize("argv", [["--prot", "80"], ["--api-keys", "k"], ["--workers"]])
def test_an_unknown_or_incomplete_option_stops_with_status_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        command_line_environment(argv)
    assert done.value.code == 2


def test_a_bad_option_value_is_named_as_the_option() -> None:
    res = subprocess.run([sys.executable, "-m", "service", "--max-batch", "0"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "error: --max-batch (GAN_MAX_BATCH): Input should be greater than or equal to 1" in res.stderr


def test_options_reach_every_worker_and_win_over_the_environment(tmp_path: Path) -> None:
    weights = write_tiny_model(tmp_path / "weights")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GAN_MAX_N": "64", "GAN_PORT": "1"}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port), "--host", "127.0.0.1",
                                 "--workers", "2", "--engine", "thread", "--device", "cpu", "--max-n", "3",
                                 "--weights-dir", str(weights), "--default-model", MODEL,
                                 "--log-level", "warning"], cwd=ROOT, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)

        async def ask(n: int) -> int:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:  # a connection each
                return (await client.post("/generate", json={"label": 1, "n": n})).status_code

        async def many() -> list[int]:
            return list(await asyncio.gather(*(ask(3 if i % 2 else 4) for i in range(24))))

        # --max-n 3 (not GAN_MAX_N=64) in both workers: n=4 refused, n=3 served, wherever it lands
        assert asyncio.run(many()) == [422, 200] * 12
    finally:
        proc.terminate()
        proc.wait(30)
