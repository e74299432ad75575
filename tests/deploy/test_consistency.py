"""The Dockerfile, compose file and Kubernetes manifests agree with each other and with the
service: one port, the service's probe paths, only GAN_* names that are Settings fields (with
values Settings accepts), one entry point, one non-root user, and a grace period that covers
draining the batcher.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml

from service.engine import STOP_TIMEOUT_S
from tests.deploy import deployfiles as df

PORT = 8000
ENTRY_POINT = ["python", "-m", "service"]
LIVENESS, READINESS, METRICS_PATH = "/healthz", "/readyz", "/metrics"
VARIANTS = ("cuda", "cpu")


def compose() -> dict[str, Any]:
    return yaml.safe_load(df.COMPOSE.read_text())


def gan_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if "build" in s}


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return df.by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


KUSTOMIZATIONS = {"base": df.BASE, "overlay-cpu": df.CPU_OVERLAY}


def kustomized() -> dict[str, list[dict[str, Any]]]:
    return {name: df.render(folder) for name, folder in KUSTOMIZATIONS.items()}


def environment_names() -> list[str]:
    """The keys of environments(), without rendering kustomize (parametrize runs at collection)."""
    names = [f"Dockerfile VARIANT={variant}" for variant in VARIANTS]
    return names + [f"compose {name}" for name in gan_services()] + [f"k8s {name}" for name in KUSTOMIZATIONS]


def environments() -> dict[str, dict[str, str]]:
    """Every environment the service is started with, as the container would see it."""
    envs: dict[str, dict[str, str]] = {}
    for variant in VARIANTS:
        image_env = df.read_dockerfile().image(VARIANT=variant).env
        envs[f"Dockerfile VARIANT={variant}"] = image_env
    for name, service in gan_services().items():
        variant = service["build"]["args"]["VARIANT"]
        image_env = df.read_dockerfile().image(VARIANT=variant).env
        envs[f"compose {name}"] = {**image_env, **{k: str(v) for k, v in service["environment"].items()}}
    for name, docs in kustomized().items():
        tag = container(docs)["image"].rsplit(":", 1)[1]
        image_env = df.read_dockerfile().image(VARIANT=tag).env
        envs[f"k8s {name}"] = {**image_env, **df.by_kind(docs, "ConfigMap")["data"]}
    return envs


def settings_fields() -> set[str]:
    settings = pytest.importorskip("service.settings", reason="service.settings is not written yet")
    return {f"GAN_{name.upper()}" for name in settings.Settings.model_fields}


def test_every_gan_variable_is_a_settings_field() -> None:
    fields = settings_fields()
    used: dict[str, set[str]] = {}
    for where, env in environments().items():
        for key in env:
            if key.startswith("GAN_"):
                used.setdefault(key, set()).add(where)
    # docs/deploy.md names variables too; a typo there misleads as much as one in a manifest.
    for key in re.findall(r"\bGAN_[A-Z0-9_]+\b", (df.REPO / "docs/deploy.md").read_text()):
        used.setdefault(key, set()).add("docs/deploy.md")
    unknown = {k: sorted(w) for k, w in used.items() if k not in fields}
    assert not unknown, f"GAN_* names that service.settings.Settings has no field for: {unknown}"


@pytest.mark.parametrize("where", environment_names())
def test_settings_accept_each_environment(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = pytest.importorskip("service.settings", reason="service.settings is not written yet")
    for key in list(os.environ):
        if key.startswith("GAN_"):
            monkeypatch.delenv(key)
    envs = environments()
    assert list(envs) == environment_names()
    for key, value in envs[where].items():
        if key.startswith("GAN_"):
            monkeypatch.setenv(key, value)
    s = settings.Settings()
    assert s.port == PORT
    assert s.host == "0.0.0.0", "a container must listen on every interface"
    assert str(s.weights_dir) == "/app/weights"


def test_one_port_everywhere() -> None:
    image = df.read_dockerfile().image()
    assert image.expose == [PORT]
    for env in environments().values():
        assert env["GAN_PORT"] == str(PORT)
    for service in gan_services().values():
        assert service["ports"] == ["${CGAN_PUBLISH_ADDRESS:-127.0.0.1}:${CGAN_PUBLISH_PORT:-8000}:8000"]
    prometheus = yaml.safe_load((df.REPO / "docker/prometheus/prometheus.yml").read_text())
    assert f"gan:{PORT}" in prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    for docs in kustomized().values():
        (port,) = container(docs)["ports"]
        assert port == {"name": "http", "containerPort": PORT, "protocol": "TCP"}
        (service_port,) = df.by_kind(docs, "Service")["spec"]["ports"]
        assert service_port["targetPort"] == "http"


def test_probe_paths() -> None:
    for docs in kustomized().values():
        c = container(docs)
        assert c["startupProbe"]["httpGet"] == {"path": READINESS, "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": READINESS, "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": LIVENESS, "port": "http"}
        (endpoint,) = df.by_kind(docs, "ServiceMonitor")["spec"]["endpoints"]
        assert endpoint["path"] == METRICS_PATH
    image = df.read_dockerfile().image()
    assert image.healthcheck == ["python", "/app/healthcheck.py"]
    assert "docker/healthcheck.py" in df.read_dockerfile().copies()
    assert f"{{port}}{LIVENESS}" in (df.REPO / "docker/healthcheck.py").read_text()


def test_one_entry_point() -> None:
    for variant in VARIANTS:
        image = df.read_dockerfile().image(VARIANT=variant)
        assert image.cmd == ENTRY_POINT
        assert image.entrypoint == ["/usr/bin/tini", "--"]  # PID 1 that reaps and passes signals on
    assert any("tini" in cmd for cmd, _ in df.read_dockerfile().runs("runtime"))
    for docs in kustomized().values():
        # args: a pod's command would replace the ENTRYPOINT, and with it tini
        assert container(docs)["args"] == ENTRY_POINT
        assert "command" not in container(docs)
    for service in gan_services().values():
        assert "command" not in service and "entrypoint" not in service  # the image's CMD
        assert not service.get("init"), "a second init above the image's tini"
    assert "$(BIN)/python -m service" in (df.REPO / "Makefile").read_text()  # make serve
    if not (df.REPO / "service" / "__main__.py").is_file():
        pytest.skip("service/__main__.py not written yet")


def test_same_non_root_user_in_image_and_pod() -> None:
    user = df.read_dockerfile().image().user
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-root uid for runAsNonRoot"
    for docs in kustomized().values():
        pod = df.by_kind(docs, "Deployment")["spec"]["template"]["spec"]["securityContext"]
        assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))


def test_grace_period_covers_draining() -> None:
    for docs in kustomized().values():
        pod = df.by_kind(docs, "Deployment")["spec"]["template"]["spec"]
        timeout = float(df.by_kind(docs, "ConfigMap")["data"]["GAN_REQUEST_TIMEOUT_S"])
        pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        sleep = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", pre_stop[-1]).group(1))
        # preStop, then the longest a queued request may still wait, then 5 s for uvicorn, then
        # the engine processes' end (each joined for up to STOP_TIMEOUT_S after the drain).
        assert pod["terminationGracePeriodSeconds"] >= sleep + timeout + 5 + STOP_TIMEOUT_S
    for service in gan_services().values():  # compose has no preStop: the rest as above
        grace = int(service["stop_grace_period"].rstrip("s"))
        assert grace >= float(service["environment"]["GAN_REQUEST_TIMEOUT_S"]) + 5 + STOP_TIMEOUT_S


def test_dockerignore_lets_in_what_the_image_copies_and_nothing_heavy() -> None:
    for source in df.read_dockerfile().copies():
        assert not df.dockerignore_excludes(source), f".dockerignore excludes COPY source {source}"
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "runs/x/state.pt",
        "data/raw.gz",
        ".cache/x",
        ".pytest_cache/v",
        "service/__pycache__/main.cpython-311.pyc",
        "tests/test_x.py",
        "training/loop.py",  # the image serves; the trainer stays out
    ):
        assert df.dockerignore_excludes(path), f".dockerignore lets {path} into the build context"
