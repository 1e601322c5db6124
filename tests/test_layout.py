"""The pack's layout rules, read from the source (no host needed):

* ``midms_core`` imports neither ComfyUI (``comfy``, its top-level modules) nor the pack's
  ``nodes`` / ``host_adapters``, nor ``harness`` / ``tests``: it stays a host-free library.
* ``host_adapters`` never imports the pack's ``nodes`` (declarations import adapters, not back).
* the shipped pack (``nodes``, ``host_adapters``, ``midms_core``) never imports ``harness`` or
  ``tests``, and nothing but tests imports ``tests`` (``harness``, ``benchmarks``, ``scripts``).
* every node class in ``nodes/*.py`` (a class declaring INPUT_TYPES) is under 80 lines.
* ``nodes/*.py`` define node classes only at their top level, besides the few node-facing helpers
  in :data:`NODE_HELPERS`: other functions and classes (logic) belong in ``host_adapters`` or
  ``midms_core``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_MODULES = {"comfy", "comfy_extras", "folder_paths", "latent_preview", "execution", "server", "comfy_execution"}
NODE_CLASS_MAX_LINES = 80  # a node's declaration must be shorter than this
# Top-level functions and classes in nodes/ that are not node classes, each facing the node API:
NODE_HELPERS = {
    "nodes/errors.py": {"check_widget_values", "node_errors"},  # widget checks, errors named after the node
    "nodes/inversion.py": {"_bridge_inputs"},  # the INPUT_TYPES entries two bridge nodes share
    "nodes/matching.py": {"parse_steps"},  # the 'rewarp_steps' STRING widget -> step numbers
}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str, bool]]:
    """(line, dotted module, relative?) for every import in ``path`` (a module under ``root``, the pack's
    folder), anywhere in the file; relative imports resolved from the pack's root
    (``from ..nodes import x`` and ``from .. import nodes`` in ``host_adapters/`` -> ``nodes``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.relative_to(root).parent.parts)  # the package the module is in
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.lineno, node.module, False))
                continue
            base = package[: max(len(package) - (node.level - 1), 0)]
            if node.module:
                out.append((node.lineno, ".".join(base + [node.module]), True))
            else:
                out += [(node.lineno, ".".join(base + [alias.name]), True) for alias in node.names]
    return out


def violations(package: str, forbidden_pack: set[str], forbidden_absolute: set[str]) -> list[str]:
    """'file:line imports X' for each import of ``package`` that reaches a forbidden top-level
    name: ``forbidden_pack`` through a relative import (the pack's own packages), or
    ``forbidden_absolute`` through an absolute one (the host's modules: ComfyUI has its own
    top-level ``nodes``)."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module, relative in imported_modules(path):
            top = module.split(".")[0]
            if top in (forbidden_pack if relative else forbidden_absolute):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def is_node_class(node: ast.stmt) -> bool:
    """A class defining INPUT_TYPES (a V1 node declaration)."""
    return isinstance(node, ast.ClassDef) and any(
        isinstance(item, ast.FunctionDef) and item.name == "INPUT_TYPES" for item in node.body)


def long_node_classes(folder: Path = ROOT / "nodes") -> list[str]:
    """'file:Class has N lines' for node classes (those defining INPUT_TYPES) of NODE_CLASS_MAX_LINES or more."""
    found = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if not is_node_class(node):
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lines = node.end_lineno - first + 1
            if lines >= NODE_CLASS_MAX_LINES:
                found.append(f"{path.relative_to(ROOT)}:{node.name} has {lines} lines")
    return found


def logic_in_nodes(folder: Path = ROOT / "nodes", allowed: dict[str, set[str]] = NODE_HELPERS) -> list[str]:
    """'file:line defines name' for each top-level function or class of ``folder``'s modules that is
    neither a node class nor allowed for that file (``allowed``, keyed by the path from ``folder``'s
    parent)."""
    found = []
    for path in sorted(folder.glob("*.py")):
        key = path.relative_to(folder.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or is_node_class(node):
                continue
            if node.name not in allowed.get(key, set()):
                found.append(f"{key}:{node.lineno} defines {node.name}")
    return found


def test_core_imports_no_host_and_no_pack_layer_above_it():
    bad = violations("midms_core", {"nodes", "host_adapters", "harness", "tests"},
                     HOST_MODULES | {"nodes", "host_adapters", "harness", "tests"})
    assert not bad, "midms_core must stay host-free:\n" + "\n".join(bad)


def test_host_adapters_never_import_nodes():
    bad = violations("host_adapters", {"nodes", "harness", "tests"}, {"harness", "tests"})
    assert not bad, "host_adapters must not import the node declarations:\n" + "\n".join(bad)


def test_nodes_never_import_the_harness_or_tests():
    bad = violations("nodes", {"harness", "tests"}, {"harness", "tests"})
    assert not bad, "the node declarations are shipped code:\n" + "\n".join(bad)


@pytest.mark.parametrize("folder", ["harness", "benchmarks", "scripts"])
def test_only_tests_import_tests(folder):
    bad = violations(folder, {"tests"}, {"tests"})
    assert not bad, f"{folder} must not import tests/ (shared code belongs in harness/):\n" + "\n".join(bad)


def test_every_node_declaration_is_short():
    bad = long_node_classes()
    assert not bad, f"node classes must stay under {NODE_CLASS_MAX_LINES} lines:\n" + "\n".join(bad)


def test_nodes_hold_declarations_only():
    bad = logic_in_nodes()
    assert not bad, ("nodes/ declares nodes; move this logic to host_adapters/ or midms_core/ (or, if it only "
                     "serves the node API, add it to NODE_HELPERS):\n" + "\n".join(bad))


def test_logic_in_nodes_is_found(tmp_path):
    """The checker itself: a helper function or class beside a node class is reported, an allowed
    one and the node class are not."""
    folder = tmp_path / "nodes"
    folder.mkdir()
    (folder / "x.py").write_text(
        "import torch\nLIMIT = 3\n\n"
        "def crop(image):\n    return image\n\n"
        "class Box:\n    pass\n\n"
        "def parse(text):\n    return text\n\n"
        "class Node:\n    @classmethod\n    def INPUT_TYPES(cls):\n        return {}\n"
    )
    assert logic_in_nodes(folder, {"nodes/x.py": {"parse"}}) == ["nodes/x.py:4 defines crop", "nodes/x.py:7 defines Box"]


@pytest.mark.parametrize("source, module, expected", [
    ("from ..nodes.types import X\n", "host_adapters/x.py", ("nodes.types", True)),
    ("from .. import nodes\n", "host_adapters/x.py", ("nodes", True)),
    ("from .match import bind\n", "host_adapters/x.py", ("host_adapters.match", True)),
    ("from . import match\n", "host_adapters/__init__.py", ("host_adapters.match", True)),
    ("import comfy.samplers\n", "midms_core/x.py", ("comfy.samplers", False)),
    ("import nodes\n", "host_adapters/x.py", ("nodes", False)),
    ("def f():\n    from ...nodes import y\n", "midms_core/sub/x.py", ("nodes", True)),
])
def test_imports_are_resolved_from_the_packs_root(tmp_path, source, module, expected):
    """The checker itself: relative imports at any depth and inside functions are found."""
    path = tmp_path / module
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert [(m, r) for _, m, r in imported_modules(path, tmp_path)] == [expected]
