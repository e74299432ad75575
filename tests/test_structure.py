"""Which way dependencies point: the service and the core never import the trainer, and no two
modules import each other (directly or through others), lazy imports included."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gancore", "training", "service", "bench")
TRAINER_ONLY = ("training", "tqdm", "matplotlib", "scipy")


def _modules_after(code: str) -> set[str]:
    """sys.modules after running `code` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_the_service_imports_nothing_of_the_trainer():
    # `import torch` itself imports tqdm when it is installed (torch.hub); only what the service
    # adds on top of torch counts.
    baseline = _modules_after("import torch")
    loaded = _modules_after("import service.main") - baseline
    assert sorted(m for m in loaded if m.startswith(TRAINER_ONLY)) == []


def test_the_core_imports_neither_training_nor_the_service():
    baseline = _modules_after("import torch")
    loaded = _modules_after("import gancore.weights, gancore.networks, gancore.images, gancore.sampling, "
                            "gancore.labels, gancore.devices, gancore.fileio, gancore.files") - baseline
    assert sorted(m for m in loaded if m.startswith(("training", "service", "fastapi", *TRAINER_ONLY))) == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports anywhere in its body."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def test_no_import_cycles():
    graph = _import_graph()
    assert "training.cli" in graph and "gancore.weights" in graph  # the walk found the packages
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_the_cli_back():
    importers = [m for m, edges in _import_graph().items() if "training.cli" in edges and m != "training.__main__"]
    assert importers == []
