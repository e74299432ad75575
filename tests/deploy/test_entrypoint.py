"""Start the service exactly as the CPU image does under the CPU overlay: the Dockerfile's CMD,
with the Dockerfile's ENV and the overlay's ConfigMap, then talk to it over real HTTP.

Only what cannot be the same on a test machine is changed: the port (a free one), the bind
address (loopback), the weights folder (a tiny model made here) and the cache folders.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy import deployfiles as df
from tests.deploy.test_tools import METRICS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STARTUP_S = 60


def _missing_service() -> str | None:
    for module in ("service.settings", "service.main", "service.__main__"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not written yet"
        except ImportError as exc:
            return f"{module}: {exc}"
    return None


pytestmark = pytest.mark.skipif(_missing_service() is not None, reason=str(_missing_service()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_weights(folder: Path, name: str) -> None:
    """A randomly initialised, tiny Fashion-MNIST-shaped generator exported like a real one."""
    import torch

    from gancore.labels import FASHION_MNIST_OFFICIAL, FASHION_MNIST_SLUGS
    from gancore.networks.dcgan import ConditionalGenerator
    from gancore.weights import save_generator

    torch.manual_seed(0)
    args = {
        "latent_dim": 8,
        "num_classes": 10,
        "embed_dim": 10,
        "channels": 1,
        "image_size": 28,
        "base_width": 32,
    }
    generator = ConditionalGenerator(**args).eval()
    aliases = dict(zip(FASHION_MNIST_OFFICIAL, FASHION_MNIST_SLUGS, strict=True))
    save_generator(folder / name, generator, "dcgan", args, list(FASHION_MNIST_SLUGS), aliases)


def _container_env(tmp_path: Path, port: int) -> dict[str, str]:
    image = df.read_dockerfile().image(VARIANT="cpu")
    config = df.by_kind(df.render(df.CPU_OVERLAY), "ConfigMap")["data"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_")}
    # PATH stays this machine's: the image's PATH only puts its venv's python first, which
    # sys.executable is here.
    env.update({k: v for k, v in image.env.items() if k != "PATH"})
    env.update(config)  # envFrom the ConfigMap overrides the image's ENV, as in a pod
    env.update(
        GAN_PORT=str(port),
        GAN_HOST="127.0.0.1",
        GAN_WEIGHTS_DIR=str(tmp_path / "weights"),
    )
    # The image's caches (XDG_CACHE_HOME, TRITON_CACHE_DIR, ...) lie under /tmp: here, under tmp_path.
    env.update(
        {k: str(tmp_path / v.removeprefix("/tmp/")) for k, v in image.env.items() if v.startswith("/tmp/")}
    )
    # The image has the project pip-installed; here the checkout stands in for it (`make` also
    # installs it, editable, so this changes nothing there).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(df.REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _get(url: str, timeout: float = 5) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    tmp_path = tmp_path_factory.mktemp("entrypoint")
    port = _free_port()
    env = _container_env(tmp_path, port)
    _tiny_weights(Path(env["GAN_WEIGHTS_DIR"]), env["GAN_DEFAULT_MODEL"])
    cmd = df.read_dockerfile().image(VARIANT="cpu").cmd
    assert cmd[0] == "python"
    log = tmp_path / "service.log"
    workdir = tmp_path / "app"  # like the image's WORKDIR: no source tree beside it
    workdir.mkdir()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *cmd[1:]], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    seen_503 = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`python -m service` exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            status, _, _ = _get(base + "/readyz", timeout=2)
        except OSError:  # not listening yet
            time.sleep(0.2)
            continue
        if status == 200:
            return
        assert status == 503, f"/readyz answered {status} while starting"
        seen_503 = True
        time.sleep(0.2)
    pytest.fail(f"/readyz not 200 after {STARTUP_S} s (503 seen: {seen_503}):\n{log.read_text()[-4000:]}")


def test_entry_point_serves_readyz_and_generate(server: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    base, proc, log = server
    _wait_ready(base, proc, log)
    status, _, _ = _get(base + "/healthz")
    assert status == 200
    body = json.dumps({"label": "sneaker", "n": 4}).encode()
    request = urllib.request.Request(
        base + "/generate", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/png"
        png = response.read()
    assert png.startswith(PNG_MAGIC), png[:64]


def test_image_healthcheck_passes_against_the_running_service(
    server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, proc, log = server
    _wait_ready(base, proc, log)
    port = base.rsplit(":", 1)[1]
    script = str(df.REPO / "docker" / "healthcheck.py")
    ok = subprocess.run([sys.executable, script], env={**os.environ, "GAN_PORT": port}, timeout=20)
    assert ok.returncode == 0
    down = subprocess.run(
        [sys.executable, script],
        env={**os.environ, "GAN_PORT": str(_free_port())},
        capture_output=True,
        timeout=20,
    )
    assert down.returncode == 1 and b"healthcheck:" in down.stderr


def test_metrics_expose_what_the_dashboard_and_hpa_query(
    server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, proc, log = server
    _wait_ready(base, proc, log)
    status, text, _ = _get(base + "/metrics")
    assert status == 200
    types = dict(line.split()[2:4] for line in text.decode().splitlines() if line.startswith("# TYPE "))
    # The text format declares a counter as `x_total`; OpenMetrics as `x`.
    declared = {
        (f"{n}_total" if t == "counter" and not n.endswith("_total") else n): t for n, t in types.items()
    }
    missing = {n: k for n, k in METRICS.items() if declared.get(n) != k}
    assert not missing, f"/metrics lacks (or mistypes) metrics that docker/grafana and k8s/ query: {missing}"


def test_sigterm_stops_it_within_the_grace_period(server: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    base, proc, log = server
    _wait_ready(base, proc, log)
    pod = df.by_kind(df.render(df.CPU_OVERLAY), "Deployment")["spec"]["template"]["spec"]
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=pod["terminationGracePeriodSeconds"])
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {pod['terminationGracePeriodSeconds']} s after SIGTERM")
    # uvicorn finishes its lifespan shutdown, then re-raises the signal (exit -15, 143 in a shell).
    assert code in (0, -signal.SIGTERM), log.read_text()[-4000:]
    assert "Application shutdown complete" in log.read_text(), log.read_text()[-4000:]
