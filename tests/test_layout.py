"""The distribution's layout: the packages import, the console script is declared, and the import graph is
layered: ``seqenv`` imports nothing of the project, ``measures`` only ``seqenv``, ``agents`` only those two,
and no module imports another that (directly or through others) imports it back."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("seqenv", "measures", "agents")
#: what each package may import of the project
ALLOWED = {
    "seqenv": {"seqenv"},
    "measures": {"seqenv", "measures"},
    "agents": {"seqenv", "measures", "agents"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(path: Path) -> set[str]:
    """The project names a file imports, as dotted paths (``from pkg import name`` gives ``pkg.name``; the
    graph resolves it to the module ``pkg.name`` if there is one, else to ``pkg``)."""
    tree = ast.parse(path.read_text())
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for mod, path in files.items():
        targets = set()
        for name in project_imports(path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != mod:
                targets.add(name)
        edges[mod] = targets
    return edges


def test_packages_import_and_register_envs():
    import gymnasium as gym

    for name in PACKAGES:
        importlib.import_module(name)
    for task in ("ngood2", "ngood4", "ngood6"):
        assert f"SplitSeq-{task}-v0" in gym.registry


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_the_floors_below(package):
    for mod, targets in graph().items():
        if mod.split(".")[0] == package:
            upward = sorted(t for t in targets if t.split(".")[0] not in ALLOWED[package])
            assert not upward, f"{mod} imports {upward}"


def test_no_module_imports_itself_back():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_no_source_file_is_over_500_lines():
    long = {
        str(p.relative_to(REPO)): n
        for pkg in (*PACKAGES, "scripts")
        for p in (REPO / pkg).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long
