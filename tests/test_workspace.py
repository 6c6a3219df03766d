"""The architecture holds: dependencies point one way and eva-core installs without training libraries."""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {name: ROOT / "packages" / name.replace("_", "-") / "src" / name
            for name in ("eva_core", "eva_data", "eva_train", "eva_eval")}
# What each package may import among ours and the training stack (style.md, "Where code lives").
FORBIDDEN = {
    "eva_core": {"eva_data", "eva_train", "eva_eval", "lightning", "pytorch_lightning", "peft", "bitsandbytes", "trl"},
    "eva_data": {"eva_train", "eva_eval", "lightning", "pytorch_lightning"},
    "eva_eval": {"eva_train", "lightning", "pytorch_lightning"},
    "eva_train": {"eva_eval"},
}
TRAINING_LIBRARIES = {"lightning", "pytorch-lightning", "lightning-utilities", "peft", "bitsandbytes", "trl"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    offenders = {}
    for path in PACKAGES[package].rglob("*.py"):
        bad = imported_roots(path) & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders


def test_eva_core_installs_without_training_libraries():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    seen, todo = set(), ["eva-core"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(d["name"] for d in packages[name].get("dependencies", []))
    assert not seen & TRAINING_LIBRARIES


def test_every_module_imports():
    failures = {}
    for folder in PACKAGES.values():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if parts[-1] == "__main__":
                continue
            try:
                importlib.import_module(name)
            except Exception as error:  # noqa: BLE001 - report every failure at once
                failures[name] = f"{type(error).__name__}: {error}"
    assert not failures


# eva-train's folders from the ground up: each may import only itself and the folders before it
# (eva_train/__init__.py, docs/architecture.md).
TRAIN_LAYERS = ("model", "encoding", "data", "objectives", "rl", "stages", "callbacks", "cli")


def train_module_imports() -> dict[str, set[str]]:
    """Every eva-train module and the eva-train modules it imports, at any depth of the code
    (an import inside a function is still an arrow)."""
    folder = PACKAGES["eva_train"]
    modules = {".".join(p.relative_to(folder.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in folder.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            found = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            targets.update(t for t in found if t.startswith("eva_train.") and t in modules)
        graph[name] = targets - {name}
    return graph


def test_eva_train_folders_import_downwards_only():
    def layer(module: str) -> int:
        parts = module.split(".")
        return TRAIN_LAYERS.index(parts[1]) if len(parts) > 2 else -1  # eva_train/__init__ holds no code

    graph = train_module_imports()
    assert {m.split(".")[1] for m in graph if m.count(".") >= 2} == set(TRAIN_LAYERS)  # a new folder needs a layer
    upward = {f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer(b) > layer(a)}
    assert not upward


def test_eva_train_has_no_import_circle():
    graph = train_module_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles
