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


def test_a_host_that_does_not_resolve_names_gan_host_not_the_port(capsys) -> None:  # noqa: ANN001
    from service.__main__ import check_port_free

    with pytest.raises(SystemExit) as stop:
        check_port_free("no-such-host.invalid", 8000)
    assert stop.value.code == 3
    err = capsys.readouterr().err
    assert "GAN_HOST" in err and "GAN_PORT" not in err


def test_a_port_in_use_still_names_gan_port(capsys) -> None:  # noqa: ANN001
    import socket

    from service.__main__ import check_port_free

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(SystemExit):
            check_port_free("127.0.0.1", held.getsockname()[1])
    assert "GAN_PORT" in capsys.readouterr().err


def _loaded(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.labels["model"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "gan_model_loaded" for s in f.samples}


@pytest.mark.anyio
async def test_failed_reloads_leave_no_bogus_model_loaded_series(make_settings, tmp_path: Path) -> None:  # noqa: ANN001
    import shutil

    from tests.helpers import GRAY, RGB, RGB_LABELS, serve, write_model
    from tests.service.test_reload import AUTH, write_gray

    root = tmp_path / "weights"
    write_gray(root / GRAY, 1)
    (root / GRAY).rename(root / "gray-folder")  # the model keeps its name, config.json's
    write_model(root / RGB, 2, 3, 32, RGB_LABELS)
    async with serve(make_settings(weights_dir=root, admin_token="admin-token-7")) as s:
        assert _loaded((await s.client.get("/metrics")).text) == {GRAY: 1.0, RGB: 1.0}
        for weights in (root / "gray-folder").glob("*.safetensors"):
            weights.write_bytes(b"not safetensors")
        (root / "broken").mkdir()
        (root / "broken" / "config.json").write_text("{")
        r = await s.client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200, r.text
        # (a) the failed reload is reported under the model's name, which still serves
        assert _loaded((await s.client.get("/metrics")).text) == {GRAY: 1.0, RGB: 1.0, "broken": 0.0}
        shutil.rmtree(root / "broken")
        r = await s.client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200, r.text
        # (b) the failed folder's gauge goes with its folder
        assert _loaded((await s.client.get("/metrics")).text) == {GRAY: 1.0, RGB: 1.0}


@pytest.mark.anyio
async def test_an_interpolation_refused_with_503_costs_no_rate_limit_tokens(make_settings) -> None:  # noqa: ANN001
    """Admitted first, charged after, as /generate: with 2 tokens, two refused walks of 2 steps are
    503 and 503, not 503 then 429."""
    from tests.helpers import serve

    key = {"Authorization": "Bearer key-one"}
    async with serve(make_settings(api_keys="key-one", rate_limit_images_per_s=2, request_timeout_s=1e-6)) as s:
        codes = [(await s.client.get("/interpolate", params={"label": 1, "steps": 2}, headers=key)).status_code
                 for _ in range(2)]
        assert codes == [503, 503]


def test_a_misspelled_gan_variable_stops_start_up_naming_the_closest_setting() -> None:
    res = _start({"GAN_API_KEY": "secret-key"})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "GAN_API_KEY: not a setting; did you mean GAN_API_KEYS?" in res.stderr


def test_an_app_made_by_an_asgi_servers_factory_warns_of_a_misspelled_variable(monkeypatch, caplog) -> None:  # noqa: ANN001
    """`uvicorn --factory service.main:create_app` (or gunicorn's) builds its settings from the
    environment without python -m service's check: the misspelling is logged, not ignored."""
    import logging

    from service.main import create_app

    monkeypatch.setenv("GAN_API_KEY", "secret-key")
    with caplog.at_level(logging.WARNING, logger="service"):
        create_app()
    assert "GAN_API_KEY: not a setting; did you mean GAN_API_KEYS?" in caplog.text
    caplog.clear()
    monkeypatch.delenv("GAN_API_KEY")
    with caplog.at_level(logging.WARNING, logger="service"):
        create_app()
    assert "not a setting" not in caplog.text


def test_every_gan_name_in_docker_k8s_and_the_docs_is_accepted() -> None:
    import re

    from service.__main__ import unknown_variables

    texts = [p.read_text(errors="replace") for folder in ("docker", "k8s") for p in (ROOT / folder).rglob("*")
             if p.is_file()]
    texts += [(ROOT / name).read_text() for name in ("README.md", "docs/service.md", "docs/deploy.md")]
    names = {m for text in texts for m in re.findall(r"(?<![A-Z0-9_])GAN_[A-Z0-9_]*[A-Z0-9]", text)}
    names.discard("GAN_X")  # README's placeholder in `NAME:GAN_X=V`
    assert len(names) > 20
    assert unknown_variables(dict.fromkeys(names, "x")) == []
