"""Import structure: no cycles among dlion's modules, pure leaf modules, each module importable on
its own, and DLION_* variables read only by dlion.config (csrc reads no environment)."""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "dlion"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module_level: bool = True) -> set[str]:
    """The dlion modules ``path`` imports (at module level only, or anywhere)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "dlion"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "dlion":
                continue
            for a in node.names:  # `from . import x` imports the module dlion.x
                sub = f"{target}.{a.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*sub.split(".")) / "__init__.py"
                ).exists()
                out.add(sub if is_module else target)
    return out - {name}


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def test_no_import_cycle_between_dlion_modules():
    """Imports between dlion's modules, at module level or deferred into a function, form no
    cycle. A package's ``__init__`` imports its own submodules (it is their public face), so
    edges into a package's own ``__init__`` from below are left out: those are resolved before
    the submodule runs."""
    mods = _modules()
    graph = {
        m: {
            t
            for t in _imports(p, module_level=False)
            if t in mods and not m.startswith(t + ".") and t != "dlion"
        }
        for m, p in mods.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("leaf", ["emulate_spec", "timeline"])
def test_leaf_modules_import_nothing_of_dlion(leaf, monkeypatch):
    path = PKG / f"{leaf}.py"
    assert _imports(path, module_level=False) == set()
    spec = importlib.util.spec_from_file_location(f"standalone_{leaf}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # runs without the dlion package


ALONE = ["dlion.config", "dlion.emulate_spec", "dlion.timeline", "dlion.emulate", "dlion.data"]


@pytest.mark.parametrize("module", ALONE)
def test_each_module_imports_alone_in_a_fresh_process(module):
    code = f"import {module}"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def _environ_keys(tree: ast.Module) -> list[tuple[int, ast.expr]]:
    """The key expression of every ``os.environ[...]``, ``os.environ.get(...)``, ``... in
    os.environ`` and ``os.getenv(...)`` in ``tree``, with its line."""

    def is_environ(e: ast.expr) -> bool:
        return isinstance(e, ast.Attribute) and e.attr == "environ"

    keys: list[tuple[int, ast.expr]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_environ(node.value):
            keys.append((node.lineno, node.slice))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            f = node.func
            if f.attr == "getenv" or (is_environ(f.value) and f.attr in ("get", "setdefault")):
                keys.append((node.lineno, node.args[0]))
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            keys.append((node.lineno, node.left))
    return keys


def _key_values(tree: ast.Module, key: ast.expr) -> list[object]:
    """The strings an environment key can be: a constant, a module constant, or the loop
    variable of ``for name in CONSTANT_TUPLE``; ``[None]`` when it cannot be told."""
    constants: dict[str, list[object]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
                constants[target.id] = [value.value]
            elif isinstance(target, ast.Name) and isinstance(value, ast.Tuple):
                constants[target.id] = [getattr(e, "value", None) for e in value.elts]
    if isinstance(key, ast.Constant):
        return [key.value]
    if isinstance(key, ast.Name) and key.id in constants:
        return constants[key.id]
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            if isinstance(key, ast.Name) and node.target.id == key.id:
                if isinstance(node.iter, ast.Name) and node.iter.id in constants:
                    return constants[node.iter.id]
    return [None]


def test_dlion_variables_are_read_only_by_config():
    """No module but dlion/config.py reads a ``DLION_*`` variable (or one whose name it cannot
    be told); csrc/ and the bindings call no getenv."""
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        if path == PKG / "config.py":
            continue
        tree = ast.parse(path.read_text())
        for line, key in _environ_keys(tree):
            values = _key_values(tree, key)
            if any(not isinstance(v, str) or v.startswith("DLION_") for v in values):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {ast.unparse(key)}")
    for folder in ("csrc", "src"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".h", ".cc", ".cpp"):
                code = re.sub(r"//.*", "", path.read_text())
                if re.search(r"\bgetenv\b|\benviron\b", code):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, "\n".join(offenders)
