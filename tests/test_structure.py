"""The shape of ``midms_core`` (issue 23): a tree that reads as the method, no import circle,
nothing in it that only benchmarks, the demo or tests use, small modules and functions.

Read from the source with ``ast`` (nothing is imported), so a failure names the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "midms_core"
# where the pack's own code starts: the ComfyUI glue and the user commands (training, converter)
# (host_adapters are reached through the nodes, with the core modules they import)
ENTRY_POINTS = [ROOT / "__init__.py", *sorted((ROOT / "nodes").glob("*.py")),
                ROOT / "scripts" / "train_midms.py", ROOT / "scripts" / "convert_official_checkpoint.py"]
FORBIDDEN_IN_CORE = {"argparse", "subprocess", "urllib", "requests", "comfy", "folder_paths", "harness",
                     "benchmarks", "nodes", "host_adapters"}
MAX_MODULE_LINES = 460   # "about 450"
MAX_FUNCTION_LINES = 60
MAX_EXPORTS = 39         # fewer than 40


def core_modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of midms_core (packages by their __init__)."""
    out = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path, package: str, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``path`` imports when it runs (anywhere in the file, lazily in a
    function included; ``if TYPE_CHECKING:`` blocks excluded). ``package`` is the file's package,
    for relative imports; ``..midms_core.x`` from the pack's glue resolves to ``midms_core.x``."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if "midms_core" in module.split("."):
                module = module[module.index("midms_core"):]
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            # the module itself, or a package whose __init__ runs on the way (not the file's own
            # packages: they are already running)
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in known and not (package == prefix or package.startswith(prefix + ".")):
                    found.add(prefix)
    return found


def package_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] != "__init__" else ".".join(parts[:-1])


def import_graph() -> dict[str, set[str]]:
    modules = core_modules()
    known = set(modules)
    return {name: imported_modules(path, package_of(path), known) - {name} for name, path in modules.items()}


def test_no_import_circle():
    graph = import_graph()
    # a package's __init__ importing its own modules is no circle (the import system runs it first)
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                circle = stack[stack.index(dep):] + [dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_every_core_module_is_reached_from_the_pack_or_its_commands():
    graph, known = import_graph(), set(core_modules())
    # the pack's glue: the entry point, the nodes and the host adapters they import
    glue = {".".join(p.relative_to(ROOT).with_suffix("").parts): p
            for p in [ROOT / "__init__.py", *(ROOT / "nodes").glob("*.py"), *(ROOT / "host_adapters").glob("*.py")]}
    glue = {("" if name == "__init__" else name.removesuffix(".__init__")): p for name, p in glue.items()}
    seen_glue: set[str] = set()
    glue_todo = [n for n in glue if n.startswith("nodes") or n == ""]
    while glue_todo:
        name = glue_todo.pop()
        if name in seen_glue:
            continue
        seen_glue.add(name)
        glue_todo += [g for g in imported_modules(glue[name], package_of(glue[name]) if name else "",
                                                  set(glue) - {""}) if g not in seen_glue]
    starts = [glue[n] for n in seen_glue] + ENTRY_POINTS[-2:]
    reached: set[str] = set()
    todo = [m for path in starts for m in imported_modules(path, package_of(path), known)]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert sorted(known - reached) == [], (
        "core modules no node, host adapter or user command reaches (move them to harness/, benchmarks/ "
        "or scripts/)")


@pytest.mark.parametrize("name", sorted(core_modules()))
def test_core_module_imports_no_tooling_and_no_host(name):
    path = core_modules()[name]
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in FORBIDDEN_IN_CORE]
        elif isinstance(node, ast.ImportFrom):
            # relative imports too: ``from ...benchmarks import x`` leaves the library as surely
            package = package_of(path).split(".")
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            top = module.split(".")[0] if module else ""
            names = [top] if top else [a.name for a in node.names]
            bad += [(node.lineno, module or name) for name in names if name in FORBIDDEN_IN_CORE]
            if node.level and len(base) == 0:
                bad.append((node.lineno, "relative import above the repository root"))
    assert bad == [], f"{path.relative_to(ROOT)} imports command-line, process, network or host modules: {bad}"


@pytest.mark.parametrize("name", sorted(core_modules()))
def test_core_module_and_function_sizes(name):
    path = core_modules()[name]
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most ~450)"
    long = [(node.name, node.lineno, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines (name, line, length): {long}"


def test_fewer_than_forty_exports():
    tree = ast.parse((CORE / "__init__.py").read_text())
    exported = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))
    names = [e.value for e in exported.elts]
    assert len(names) <= MAX_EXPORTS, f"midms_core exports {len(names)} names"
    assert len(set(names)) == len(names)


def test_the_import_reader_sees_relative_lazy_and_package_imports(tmp_path):
    """The graph reader is not blind: relative, lazy (in a function) and package imports count;
    type-only imports do not."""
    pkg = tmp_path / "midms_core"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import x\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import y\n")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import y\n")
    known = {"midms_core", "midms_core.a", "midms_core.sub", "midms_core.sub.b", "midms_core.sub.c"}
    assert imported_modules(pkg / "a.py", "midms_core", known) == {"midms_core.sub", "midms_core.sub.b"}
    assert imported_modules(pkg / "sub" / "b.py", "midms_core.sub", known) == {"midms_core.a"}
    assert imported_modules(pkg / "sub" / "c.py", "midms_core.sub", known) == set()
    (tmp_path / "glue.py").write_text("from ..midms_core.sub.c import z\n")
    assert imported_modules(tmp_path / "glue.py", "nodes", known) == {"midms_core", "midms_core.sub",
                                                                      "midms_core.sub.c"}
