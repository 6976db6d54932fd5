"""The package's layers, read from the source: no import cycle among module-level imports, and no library module
imports a layer above it (viz, cli, demo) or a world (toy) - not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "sae_clip_plugin"
LIBRARY = ("model", "training", "pretrained", "data", "analysis")
ABOVE_LIBRARY = ("viz", "cli", "demo", "toy")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, module_level_only: bool) -> set[str]:
    """Our modules that `tree` imports (module level only: skip function bodies and `if TYPE_CHECKING:` blocks)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if module_level_only and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if (
                isinstance(child, ast.ImportFrom)
                and child.module
                and child.module.startswith("sae_clip_plugin")
            ):
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names)  # `from pkg import module`
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("sae_clip_plugin"))
            visit(child)

    visit(tree)
    return found


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    trees = {_module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in ROOT.rglob("*.py")}
    return {name: {m for m in _imports(tree, module_level_only) if m in trees and m != name}
            for name, tree in trees.items()}  # fmt: skip


def test_no_import_cycle_among_module_level_imports():
    graph, state, cycles = _graph(module_level_only=True), {}, []

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert cycles == []


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_library_modules_import_no_layer_above_them_and_no_world():
    bad = {
        module: sorted(m for m in imported if _layer(m) in ABOVE_LIBRARY)
        for module, imported in _graph(module_level_only=False).items()
        if _layer(module) in LIBRARY
    }
    assert {m: v for m, v in bad.items() if v} == {}
