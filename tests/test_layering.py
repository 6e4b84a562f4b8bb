"""The package's import layering, checked on the source (every import, also inside functions) and by
importing each module in a fresh interpreter.

Declared layering (docs/design.md)::

    hooks  <-  interp core  <-  analyses  <-  interp.app (CLI, demo, sweep files)

Contracts:

- ``hooks`` imports nothing of ours (no ``interp``, no ``analyses``);
- the ``interp`` core (everything under ``interp/`` except ``interp/app/`` and ``interp.__main__``)
  never imports ``analyses`` or ``interp.app``, not even inside a function;
- no import cycle among the ``interp`` modules (a package's ``__init__`` re-exporting its own
  submodules does not count);
- ``analyses`` import only public ``interp`` modules and names (no ``interp._x``, ``interp.x._y`` or
  ``from interp.x import _y``) and never the app layer;
- a use through a lazy package root counts as an import of the module that defines the name:
  ``import interp`` then ``interp.run_sweep(...)`` (or ``interp.sweep.kernel.x``) inside a function
  imports ``interp.sweep`` (``interp.sweep.kernel``), as the root's lazy loader would;
- importing any module alone works and loads nothing above its layer;
- every module states its one job in a docstring that opens the file, and none is over 600 lines.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hooks", "interp", "analyses")
#: the app layer, and ``python -m interp`` (which runs the app's command line)
APP = ("interp.app",)
APP_ENTRY = ("interp.__main__",)
MAX_LINES = 600

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _is_package(name: str) -> bool:
    return _modules()[name].name == "__init__.py"


def _layer(name: str) -> str:
    top = name.split(".")[0]
    if top == "interp":
        if name in APP_ENTRY or any(name == a or name.startswith(a + ".") for a in APP):
            return "app"
        return "core"
    return top


def _ours(target: str) -> bool:
    return target.split(".")[0] in PACKAGES


@cache
def _lazy_names(package: str) -> dict[str, str]:
    """A lazy package root's public names -> the module defining each (what its loader imports)."""
    from hooks._lazy import read_names

    return read_names(package, ROOT / package / "__init__.py")


class _Imports(ast.NodeVisitor):
    """Every import of one module: (target module, imported name or None, line, at import time).

    Besides import statements: ``importlib.import_module("x")``, "module:Class" registry strings, and
    attribute chains through a package root bound by ``import interp`` (``interp.run_sweep`` is an
    import of ``interp.sweep``, resolved by the root's lazy names; ``interp.sweep.kernel.f`` of
    ``interp.sweep.kernel``)."""

    def __init__(self, name: str, is_package: bool, modules: set[str] | None = None) -> None:
        self.package = name if is_package else name.rpartition(".")[0]
        self.found: list[tuple[str, str | None, int, bool]] = []
        self.depth = 0  # > 0 inside a function or an `if TYPE_CHECKING:` block
        self.roots: dict[str, str] = {}  # local name -> package root it is bound to (`import interp`)
        self.modules = modules

    def _resolve(self, module: str | None, level: int) -> str:
        if level == 0:
            return module or ""
        base = self.package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, None, node.lineno, self.depth == 0))
            root = alias.name.split(".")[0]
            if root in PACKAGES:  # `import interp.x` binds `interp`; `import interp.x as y` binds y to interp.x
                self.roots[alias.asname or root] = alias.name if alias.asname else root

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, inner = [], node
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if not (isinstance(inner, ast.Name) and inner.id in self.roots):
            self.generic_visit(node)
            return
        parts = self.roots[inner.id].split(".") + chain[::-1]
        modules = self.modules if self.modules is not None else set(_modules())
        # the longest prefix that is a module; one step past a package root goes through its lazy names
        k = max(i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules or i == 1)
        target = ".".join(parts[:k])
        if k < len(parts) and target in PACKAGES:
            target = _lazy_names(target).get(parts[k], target)
        self.found.append((target, None, node.lineno, self.depth == 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = self._resolve(node.module, node.level)
        for alias in node.names:
            self.found.append((module, alias.name, node.lineno, self.depth == 0))

    def visit_Call(self, node: ast.Call) -> None:  # importlib.import_module("analyses.x")
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            self.found.append((node.args[0].value, None, node.lineno, self.depth == 0))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:  # registries of "module:Class" strings
        value = node.value
        if isinstance(value, str) and ":" in value and " " not in value:
            module = value.split(":")[0]
            if _ours(module) and all(p.isidentifier() for p in module.split(".")):
                self.found.append((module, None, node.lineno, False))

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if "TYPE_CHECKING" in test:
            self._nested(node)
        else:
            self.generic_visit(node)


@cache
def _imports(name: str) -> tuple[tuple[str, str | None, int, bool], ...]:
    """Our modules that ``name`` imports: (target module, name imported from it, line, at import time).

    ``from pkg import sub`` where ``sub`` is a module counts as importing ``pkg.sub``.
    """
    tree = ast.parse(_modules()[name].read_text(), filename=str(_modules()[name]))
    visitor = _Imports(name, _is_package(name))
    visitor.visit(tree)
    out = []
    for module, imported, line, eager in visitor.found:
        if not _ours(module):
            continue
        if imported is not None and f"{module}.{imported}" in _modules():
            out.append((f"{module}.{imported}", None, line, eager))
        else:
            out.append((module, imported, line, eager))
    return tuple(out)


def _where(name: str, line: int) -> str:
    return f"{_modules()[name].relative_to(ROOT)}:{line}"


def _violations(layer: str, forbidden) -> list[str]:
    return [f"{_where(m, line)} imports {t}{'' if n is None else f' ({n})'}"
            for m in _modules() if _layer(m) == layer
            for t, n, line, _ in _imports(m) if forbidden(m, t, n)]


def test_the_checker_sees_lazy_relative_and_string_imports(tmp_path):
    """The AST walk finds imports inside functions, relative ones and "module:Class" registry strings."""
    src = ("from __future__ import annotations\nfrom . import _hook\nimport interp.tasks\n"
           "def f():\n    from analyses.norms import ResidualNorms\n"
           "REG = {'x': 'analyses.probing:FrozenProbe', 'doc': 'see analyses: not a path'}\n")
    visitor = _Imports("hooks._points", is_package=False)
    visitor.visit(ast.parse(src))
    found = {(m, n, eager) for m, n, _, eager in visitor.found}
    assert ("hooks", "_hook", True) in found
    assert ("interp.tasks", None, True) in found
    assert ("analyses.norms", "ResidualNorms", False) in found
    assert ("analyses.probing", None, False) in found
    assert not any(m.startswith("see") for m, *_ in found)


def test_the_checker_sees_uses_through_the_lazy_package_root():
    """``import interp`` then ``interp.X`` inside a function is an import of X's module (resolved by
    the root's lazy names), and ``interp.sweep.kernel.f`` one of ``interp.sweep.kernel``."""
    src = ("def f(model):\n    import interp\n    res = interp.run_sweep(model)\n"
           "    return interp.sweep.kernel.interactive(), interp.Results, res\n"
           "def g():\n    import interp.objectives as obj\n    return obj.Behavioural\n")
    visitor = _Imports("interp.results", is_package=False)
    visitor.visit(ast.parse(src))
    found = {(m, eager) for m, n, _, eager in visitor.found}
    assert {("interp.sweep", False), ("interp.sweep.kernel", False), ("interp.results", False),
            ("interp.objectives", False)} <= found


def test_a_cycle_through_the_lazy_package_root_is_caught(monkeypatch):
    """Planted: the sweep kernel builds Results, Results reads a dissolution through ``interp.X`` of
    a module that runs sweeps: the cycle finder sees it only through the lazy root."""
    planted = {
        "interp.sweep.kernel": "def make(): from interp.results import Results\n",
        "interp.results": "def read(self):\n    import interp\n    return interp.dissolution(self)\n",
        "interp.dissolve": "def dissolution():\n    import interp\n    return interp.sweep.kernel.analyse()\n",
    }
    names = set(_modules())

    def imports(m):
        v = _Imports(m, is_package=False, modules=names)
        v.visit(ast.parse(planted[m]))
        return tuple(v.found)

    monkeypatch.setattr(sys.modules[__name__], "_modules",
                        lambda: {m: Path(f"/x/{m.replace('.', '_')}.py") for m in planted})
    monkeypatch.setattr(sys.modules[__name__], "_imports", imports)
    assert _cycles("core") == [["interp.dissolve", "interp.results", "interp.sweep.kernel"]]


def test_every_package_module_is_found():
    names = set(_modules())
    assert {"hooks", "interp", "analyses", "interp.tasks", "interp.app.cli"} <= names
    assert len(names) > 40


def test_hooks_import_nothing_of_ours():
    bad = _violations("hooks", lambda m, t, n: not t.startswith("hooks"))
    assert not bad, "hooks must not import interp or analyses:\n" + "\n".join(bad)


def test_core_never_imports_analyses_or_the_app():
    bad = _violations("core", lambda m, t, n: _layer(t) in ("analyses", "app"))
    assert not bad, "the interp core must not import analyses or interp.app (move the code to " \
                    "interp/app/):\n" + "\n".join(bad)


def test_analyses_use_only_public_interp():
    def private(m, t, n):
        if _layer(t) == "app":
            return True
        if not t.startswith("interp"):
            return False
        parts = t.split(".") + ([n] if n else [])
        return any(p.startswith("_") and not p.startswith("__") for p in parts)

    bad = _violations("analyses", private)
    assert not bad, "analyses may use only public interp modules and names:\n" + "\n".join(bad)


def _cycles(layer: str) -> list[list[str]]:
    """Strongly connected components (size > 1) of the import graph among ``layer``'s modules.

    Edges are all imports (at import time or inside functions). A package's ``__init__`` importing its
    own submodules is an aggregator, not a dependency, so that edge is left out.
    """
    nodes = [m for m in _modules() if _layer(m) == layer]
    graph = {m: set() for m in nodes}
    for m in nodes:
        for t, _, _, _ in _imports(m):
            if t in graph and t != m and not (_is_package(m) and t.startswith(m + ".")):
                graph[m].add(t)
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle(monkeypatch):
    fake = {"interp.a": (("interp.b", None, 1, False),), "interp.b": (("interp.a", None, 1, True),),
            "interp.c": (("interp.a", None, 1, True),)}
    monkeypatch.setattr(sys.modules[__name__], "_modules",
                        lambda: {m: Path(f"/x/{m.split('.')[1]}.py") for m in fake})
    monkeypatch.setattr(sys.modules[__name__], "_imports", lambda m: fake[m])
    assert _cycles("core") == [["interp.a", "interp.b"]]


def test_no_import_cycles_in_interp():
    cycles = _cycles("core") + _cycles("app")
    assert not cycles, "import cycles among interp modules (make the imports one-way):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles)


# ---- importing each module alone, in a fresh interpreter (one fork per module) ----------------------

_ISOLATED = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import torch  # shared by every child: the forks then take milliseconds
results = {}
for name in sys.argv[2:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            import importlib, warnings
            warnings.simplefilter("ignore")
            importlib.import_module(name)
            msg = {"ok": True, "loaded": sorted(m for m in sys.modules
                                                if m.split(".")[0] in ("hooks", "interp", "analyses"))}
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            msg = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        os.write(w, json.dumps(msg).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    results[name] = json.loads(data)
print(json.dumps(results))
"""


@cache
def _isolated_imports() -> dict[str, dict]:
    names = [m for m in _modules() if m != "interp.__main__"]  # __main__ runs the CLI
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _ISOLATED, str(ROOT), *names], capture_output=True,
                         text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_each_module_imports_alone_and_loads_nothing_above_its_layer():
    above = {"hooks": ("core", "analyses", "app"), "core": ("analyses", "app"), "analyses": ("app",),
             "app": ()}
    failed, leaks = [], []
    for name, res in _isolated_imports().items():
        if not res["ok"]:
            failed.append(f"{name}: {res['error']}")
            continue
        bad = [m for m in res["loaded"] if _layer(m) in above[_layer(name)]]
        if bad:
            leaks.append(f"{name} ({_layer(name)}) loads {bad}")
    assert not failed, "modules that fail to import on their own:\n" + "\n".join(failed)
    assert not leaks, "importing a module loads a layer above it:\n" + "\n".join(leaks)


# ---- module size and docstrings -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(_modules()))
def test_no_module_over_600_lines(name):
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{_modules()[name].relative_to(ROOT)} has {lines} lines (> {MAX_LINES}): " \
                               "split it by job"


def test_each_module_opens_with_its_docstring():
    missing = []
    for name, path in _modules().items():
        body = ast.parse(path.read_text()).body
        first = body[0] if body else None
        doc = first.value.value if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str) else None
        if doc is None or not doc.strip().splitlines()[0].strip():
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, "modules must open with a docstring whose first line is their job:\n" + \
        "\n".join(missing)
