"""Module boundaries: no ufm module reaches into another module's private names.

A name that starts with one underscore is private to the module that defines it.
Private *modules* (``ufm._memory``, ``ufm._kernels``, ...) may be imported by name;
what may not be used across modules is a private function, class, constant or
method: ``from .results import _SCHEMA``, ``_simulate._Progress``,
``run._all_arrays()``. Shared helpers live in ``ufm._util`` (or are public).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "ufm"


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _source_module(module: str, path: pathlib.Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined(tree: ast.AST) -> set:
    """Every name a module binds: functions, classes, assignments, attributes it sets, arguments."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name)
    return names


def _violations(root: pathlib.Path = ROOT) -> list:
    files = sorted(root.rglob("*.py"))
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in files}
    modules = {_module_name(path, root) for path in files}
    defined = {path: _defined(tree) for path, tree in trees.items()}
    private_anywhere = {name for names in defined.values() for name in names if _private(name)}
    found = []
    for path, tree in trees.items():
        module, here = _module_name(path, root), f"{path.relative_to(root.parent)}"
        aliases = {}                                  # local name -> ufm module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _source_module(module, path, node)
                if source.split(".")[0] != "ufm":
                    continue
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                    elif _private(alias.name) and source != module:
                        found.append(f"{here}:{node.lineno}: from {source} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "ufm":
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in aliases:
                found.append(f"{here}:{node.lineno}: {value.id}.{node.attr} (a private name of {aliases[value.id]})")
            elif (not (isinstance(value, ast.Name) and value.id in ("self", "cls"))
                  and node.attr in private_anywhere and node.attr not in defined[path]):
                found.append(f"{here}:{node.lineno}: .{node.attr} (private to the module that defines it)")
    return found


def test_no_module_uses_another_modules_private_names():
    found = _violations()
    assert not found, "private names used across modules (make them public or move them to ufm._util):\n" + \
        "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from .results import _SCHEMA\n", "from ufm.results import _SCHEMA"),
    ("from . import _simulate\nx = _simulate._Progress\n", "_simulate._Progress"),
])
def test_the_check_finds_a_private_import(tmp_path, source, expected):
    pkg = tmp_path / "ufm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "results.py").write_text("_SCHEMA = 1\n")
    (pkg / "_simulate.py").write_text("class _Progress:\n    pass\n")
    (pkg / "user.py").write_text(source)
    assert any(expected in line for line in _violations(pkg))


def test_the_check_finds_a_private_method_of_another_module(tmp_path):
    pkg = tmp_path / "ufm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "results.py").write_text("class Run:\n    def _all_arrays(self):\n        return {}\n")
    (pkg / "io.py").write_text("def save(run):\n    return run._all_arrays()\n")
    assert [line.split(": ", 1)[1] for line in _violations(pkg)] == [
        "._all_arrays (private to the module that defines it)"]


#: The ufm modules that load a heavy package when imported (numba, sympy): imported where they are used.
HEAVY = {"ufm._kernels", "ufm._integrate", "ufm.symbolic"}


def _reaches(graph: dict, start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


def _late_imports(root: pathlib.Path = ROOT) -> list:
    """Function-level imports of ufm modules that are neither heavy nor needed to break a cycle (the target
    imports this module at its top level, directly or through others)."""
    files = sorted(root.rglob("*.py"))
    modules = {_module_name(path, root) for path in files}
    graph = _import_graph(root)
    late = []
    for path in files:
        module = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.ImportFrom):
                    continue
                source = _source_module(module, path, node)
                if source.split(".")[0] != "ufm":
                    continue
                targets = {f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names}
                needless = sorted(t for t in targets - HEAVY if not _reaches(graph, t, module))
                if needless:
                    late.append(f"{path.relative_to(root.parent)}:{node.lineno}: {needless}")
    return late


def test_internal_modules_are_imported_at_the_top():
    late = _late_imports()
    assert not late, "import these at the top of the module (no cycle, not numba/sympy):\n" + "\n".join(late)


def test_a_late_import_is_allowed_only_to_break_a_cycle(tmp_path):
    pkg = tmp_path / "ufm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from .a import f\n    return f\n")          # a imports b: a cycle
    (pkg / "c.py").write_text("def h():\n    from .b import g\n    return g\n")          # no cycle: belongs on top
    assert [line.split(": ", 1)[1] for line in _late_imports(pkg)] == ["['ufm.b']"]


def _import_graph(root: pathlib.Path = ROOT) -> dict:
    """Module -> the ufm modules it imports at its top level."""
    files = sorted(root.rglob("*.py"))
    modules = {_module_name(path, root): path for path in files}
    graph = {}
    for module, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                source = _source_module(module, path, node)
                if source.split(".")[0] == "ufm":
                    deps |= {f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names}
        graph[module] = deps - {module}
    return graph


def _cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = _import_graph()
    assert not _cycles(graph)
    assert not any(m.startswith("ufm.plotting") for m in graph["ufm._sweep.core"] | graph["ufm._sweep"])
    assert not any(m.startswith("ufm._sweep") for m in graph["ufm.plotting"])
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
