"""How docker/Dockerfile builds the image and docker/compose.yaml exposes it, read statically:
pinned dependencies in a layer of their own below the project's code, the torch index as a
build argument, caches and file modes that suit a non-root user on a read-only root, and a
compose file that publishes nothing beyond this host by default.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy import deployfiles as df

VARIANTS = ("cuda", "cpu")
CONSTRAINTS = df.REPO / "constraints.txt"
PROJECT_SOURCES = {"pyproject.toml", "README.md", "gancore", "service"}
# Left out of constraints.txt on purpose: its header says why.
UNPINNED = re.compile(r"torch|triton|nvidia-.*|cuda-.*|cgan-service")
TORCH_INDEX = {"cuda": "https://pypi.org/simple", "cpu": "https://download.pytorch.org/whl/cpu"}
MIRROR = "https://mirror.example/simple"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line)
            assert match, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            out[normalize(match.group(1))] = match.group(2)
    return out


# --- Dockerfile: layers ---------------------------------------------------------------------------


def runtime_copies_from() -> list[df.Copy]:
    return [
        df.parse_copy(rest)
        for keyword, rest in df.read_dockerfile().stages[-1].instructions
        if keyword == "COPY" and "--from=" in rest
    ]


def context_sources(stage: str, variant: str) -> set[str]:
    """What stage `stage` and its parents COPY from the build context."""
    sources: set[str] = set()
    for st in df.read_dockerfile().chain(stage, VARIANT=variant):
        for keyword, rest in st.instructions:
            if keyword == "COPY" and "--from=" not in rest:
                sources.update(s.rstrip("/") for s in df.parse_copy(rest).sources)
    return sources


def venv_stage() -> str:
    """The stage the runtime copies its virtual environment (the dependencies) from."""
    (venv,) = [
        c for c in runtime_copies_from() if c.target.rstrip("/") == "/opt/venv" and c.sources == ["/opt/venv"]
    ]
    return venv.flags["from"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_dependencies_are_a_layer_that_code_changes_leave_alone(variant: str) -> None:
    copies = runtime_copies_from()
    venv = venv_stage()
    # Only the pins reach the dependencies' stages: a change to the code cannot rebuild them.
    assert context_sources(venv, variant) == {"constraints.txt"}, (
        f"the venv the runtime copies from stage {venv!r} depends on more than constraints.txt"
    )
    # The project comes after, from a stage that installs it alone and copies only its files.
    position = next(i for i, c in enumerate(copies) if c.flags["from"] == venv)
    later = [
        c for c in copies[position + 1 :] if PROJECT_SOURCES <= context_sources(c.flags["from"], variant)
    ]
    assert len(later) == 1, "expected one later COPY --from of the stage that installs the project"
    (project,) = later
    assert project.sources != ["/opt/venv"], "the project's layer must not be the whole venv again"
    installs = [
        cmd
        for cmd, _ in df.read_dockerfile().runs(project.flags["from"], VARIANT=variant)
        if " install " in cmd
    ]
    assert installs and all("--no-deps" in cmd for cmd in installs), installs


# --- constraints.txt --------------------------------------------------------------------------------


def test_constraints_pin_every_base_dependency_within_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    requirements = pytest.importorskip("packaging.requirements")
    pinned = pins()
    project = tomllib.loads((df.REPO / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        requirement = requirements.Requirement(dependency)
        name = normalize(requirement.name)
        if UNPINNED.fullmatch(name):
            continue
        assert name in pinned, f"{requirement.name} is a dependency in pyproject.toml but not pinned"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {name}=={pinned[name]}, outside pyproject.toml's {dependency!r}"
        )
    assert not [n for n in pinned if UNPINNED.fullmatch(n)], (
        "torch, its CUDA wheels or the project are pinned"
    )


def test_image_and_smoke_install_use_the_pins() -> None:
    for variant in VARIANTS:
        commands = [cmd for cmd, _ in df.read_dockerfile().runs(venv_stage(), VARIANT=variant)]
        assert any(re.search(r"pip install .*-[rc] \S*constraints\.txt", c) for c in commands), commands
    smoke = (df.REPO / "scripts/smoke_install.sh").read_text()
    assert "CONSTRAINTS=$REPO/constraints.txt" in smoke
    # torch and the project, both under the pins, then the closure check
    assert smoke.count('pip install --quiet -c "$CONSTRAINTS"') == 2
    assert "pip check" in smoke


# --- Dockerfile: build arguments, environment, modes --------------------------------------------


def torch_install(variant: str, **build_args: str) -> str:
    dockerfile = df.read_dockerfile()
    (stage,) = [
        s
        for s in dockerfile.chain(venv_stage(), VARIANT=variant)
        if s.name and "torch==" in str(s.instructions)
    ]
    (command,) = [
        cmd for cmd, _ in dockerfile.runs(stage.name, VARIANT=variant, **build_args) if "torch==" in cmd
    ]
    match = re.search(r'--index-url[= ]"?([^"\s]+)', command)
    assert match, f"the torch install names no index: {command}"
    return match.group(1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_torch_index_is_a_build_argument(variant: str) -> None:
    assert torch_install(variant) == TORCH_INDEX[variant]
    assert torch_install(variant, TORCH_INDEX_URL=MIRROR) == MIRROR, "--build-arg TORCH_INDEX_URL is ignored"
    env = df.read_dockerfile().image(VARIANT=variant).env
    leaked = {k for k in env if k.endswith("INDEX_URL")}
    assert not leaked, f"build-time index URLs in the image's environment: {leaked}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_pip_mirror_reaches_every_pip_install(variant: str) -> None:
    dockerfile = df.read_dockerfile()
    for stage in dockerfile.chain("build", VARIANT=variant):
        for command, seen in dockerfile.runs(stage.name, VARIANT=variant, PIP_INDEX_URL=MIRROR):
            if "pip install" in command and "--index-url" not in command:
                assert seen.get("PIP_INDEX_URL") == MIRROR, f"stage {stage.name}: {command}"
    # The CUDA build of torch is PyPI's: a mirror of PyPI serves it too.
    assert torch_install("cuda", PIP_INDEX_URL=MIRROR) == MIRROR


@pytest.mark.parametrize("variant", VARIANTS)
def test_caches_go_to_tmp(variant: str) -> None:
    env = df.read_dockerfile().image(VARIANT=variant).env
    for key in ("XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "CUDA_CACHE_PATH"):
        assert env.get(key, "").startswith("/tmp/"), (
            f"{key}={env.get(key)!r}: HOME (/nonexistent) is not writable"
        )


def test_copied_files_are_readable_by_the_service_user_whatever_the_checkout_modes() -> None:
    copies = {
        src: c
        for keyword, rest in df.read_dockerfile().stages[-1].instructions
        if keyword == "COPY" and "--from=" not in rest
        for c in [df.parse_copy(rest)]
        for src in c.sources
    }
    for source, needs in (("weights", 0o005), ("docker/healthcheck.py", 0o004)):  # r-x for folders
        mode = copies[source].flags.get("chmod")
        assert mode is not None, f"COPY {source} keeps the checkout's modes (0600 makes it unreadable)"
        assert int(mode, 8) & needs == needs and not int(mode, 8) & 0o022, f"COPY --chmod={mode} {source}"


# --- compose ------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(df.COMPOSE.read_text())


def with_defaults(text: str) -> str:
    """Compose's interpolation with every variable unset: ${VAR:-default} gives the default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def test_compose_publishes_on_loopback_by_default() -> None:
    published = {name: s["ports"] for name, s in compose()["services"].items() if "ports" in s}
    assert set(published) == {"gan", "gan-cpu", "prometheus", "grafana"}
    for name, ports in published.items():
        for port in ports:
            host, _, _ = with_defaults(port).rpartition(":")
            address = host.rpartition(":")[0]
            assert address == "127.0.0.1", f"{name} publishes {port!r} on {address or 'every address'}"
            assert "${CGAN_PUBLISH_ADDRESS:-" in port, f"{name}: one variable should open every port"


def test_compose_grafana_admin_password_has_no_default() -> None:
    env = compose()["services"]["grafana"]["environment"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"])


def test_compose_states_the_worker_count() -> None:
    for name, service in compose()["services"].items():
        if "build" in service:
            workers = int(service["environment"].get("GAN_WORKERS", 0))
            assert workers >= 1, (
                f"{name}: GAN_WORKERS auto counts the host's cores (compose sets no CPU limit)"
            )
