"""Lazy package roots: a package's public names, listed once, loaded on first use.

The three package roots (``hooks``, ``interp``, ``analyses``) keep ``import`` cheap by deferring the
modules that pull in torch or TransformerLens until a name is used (PEP 562 module ``__getattr__``).
Each root lists its public names once, as the imports of an ``if TYPE_CHECKING:`` block, which type
checkers and editors read; :func:`attach` reads the same block from the root's source with ``ast``
and returns the module's ``__getattr__``, ``__dir__`` and ``__all__``. This is the scheme of the
Scientific Python ``lazy_loader`` (SPEC 1), with the stub inlined in the ``__init__.py``.

Resolution of ``from M import name`` in the block: ``name`` is the submodule ``M.name`` when ``M`` is
the package itself (``from interp import sweep``), otherwise the attribute ``name`` of module ``M``.
The value is cached in the package's globals, so each name is looked up once.

Example::

    >>> import hooks
    >>> "capture" in dir(hooks) and "capture" in hooks.__all__
    True
    >>> hooks.capture.__module__
    'hooks._capture'
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def read_names(package: str, init_file: str | Path) -> dict[str, str]:
    """Map each name imported in the root's ``if TYPE_CHECKING:`` block to the module defining it.

    A submodule of the package (``from interp import sweep``) maps to its own dotted name
    (``"interp.sweep"``); every other name maps to the module it is imported from.
    """
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"), filename=str(init_file))
    names: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for stmt in node.body:
            if not isinstance(stmt, ast.ImportFrom):
                raise ValueError(
                    f"{init_file}:{stmt.lineno}: the TYPE_CHECKING block of a lazy package root may "
                    f"hold only 'from module import name' statements (found {ast.unparse(stmt)!r}); "
                    "move other code out of the block."
                )
            module = stmt.module or ""
            if stmt.level:
                base = package.rsplit(".", stmt.level - 1)[0] if stmt.level > 1 else package
                module = f"{base}.{module}" if module else base
            for alias in stmt.names:
                public = alias.asname or alias.name
                if public in names:
                    raise ValueError(
                        f"{init_file}:{stmt.lineno}: {public!r} is listed twice in the TYPE_CHECKING "
                        "block; list each public name once."
                    )
                names[public] = f"{package}.{alias.name}" if module == package else module
    return names


def attach(
    package: str, init_file: str | Path
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Return ``(__getattr__, __dir__, __all__)`` for the lazy package root ``package``.

    Use at the end of the root's ``__init__.py``::

        __getattr__, __dir__, __all__ = attach(__name__, __file__)

    ``__all__`` lists the names in the order of the ``TYPE_CHECKING`` block; names the root defines
    eagerly (``__version__``) may be appended to it, and ``__dir__`` then lists them too.
    """
    names = read_names(package, init_file)
    public = list(names)

    def __getattr__(name: str) -> Any:  # noqa: N807 (the PEP 562 hook's name)
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if module == f"{package}.{name}":
            value = importlib.import_module(module)
        else:
            value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return list(public)

    return __getattr__, __dir__, public
