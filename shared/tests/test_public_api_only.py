"""Sen's code reaches connexion, a2wsgi, uvicorn, uvicorn_worker and gunicorn through their public API only.

A private name (one leading underscore) of those packages can change in any minor release, silently.
This reads every Python file under ``shared/`` and ``services/`` (tests included) and fails on:

- an import of a private module or name of those packages (``from connexion.context import _context``);
- an attribute with a private name that one of those packages defines and Sen's own code does not
  (``app._middleware_app``, ``self._install_sigquit_handler()``, ``super()._serve()``);
- a method with such a name defined in a class Sen derives from one of their classes (an override
  of ``UvicornWorker._serve`` or ``BearerSecurityHandler._accepts_kwarg``).

The private names of the packages are read from their installed sources.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

import pytest

PACKAGES = ("connexion", "a2wsgi", "uvicorn", "uvicorn_worker", "gunicorn")
ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"node_modules", ".venv", "__pycache__", "build", "dist"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _sources(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*.py")) if not SKIP_DIRS & set(p.relative_to(root).parts)]


def _defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, assigned names and attributes."""
    names: set[str] = set()
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
            names.add((node.asname or node.name).split(".")[0])
    return {n for n in names if _private(n)}


@cache
def package_private_names() -> frozenset[str]:
    names: set[str] = set()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin, f"{package} is not installed"
        for path in _sources(Path(spec.origin).parent):
            names |= _defined(ast.parse(path.read_text("utf-8"), str(path)))
    return frozenset(names)


@cache
def our_trees() -> tuple[tuple[Path, ast.AST], ...]:
    return tuple((p, ast.parse(p.read_text("utf-8"), str(p)))
                 for top in ("shared", "services") for p in _sources(ROOT / top))


@cache
def our_private_names() -> frozenset[str]:
    return frozenset(n for _, tree in our_trees() for n in _defined(tree))


def _theirs(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in PACKAGES


def violations(tree: ast.AST, theirs: frozenset[str], ours: frozenset[str]) -> list[str]:
    """What in ``tree`` reaches a private name of the packages (line: what)."""
    found = []
    bases_from_them: set[str] = set()  # local names bound to their classes
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _theirs(alias.name) and any(_private(part) for part in alias.name.split(".")):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and _theirs(node.module):
            if any(_private(part) for part in (node.module or "").split(".")):
                found.append(f"{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                bases_from_them.add(alias.asname or alias.name)
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in theirs - ours:
            found.append(f"{node.lineno}: .{node.attr}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        derived = any((isinstance(b, ast.Name) and b.id in bases_from_them)
                      or (isinstance(b, ast.Attribute) and isinstance(b.value, ast.Name) and _theirs(b.value.id))
                      for b in node.bases)
        if derived:
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in theirs:
                    found.append(f"{item.lineno}: {node.name} overrides {item.name}")
    return found


def test_no_private_name_of_the_serving_packages_in_shared_or_services() -> None:
    theirs = package_private_names()
    ours = our_private_names()
    bad = {str(path.relative_to(ROOT)): v for path, tree in our_trees() if (v := violations(tree, theirs, ours))}
    assert not bad, f"private names of {', '.join(PACKAGES)} used: {bad}"


@pytest.mark.parametrize("source, what", [
    ("from connexion.context import _context", "from connexion.context import _context"),
    ("import uvicorn._types", "import uvicorn._types"),
    ("def f(app):\n    return app._middleware_app", "._middleware_app"),
    ("from uvicorn_worker import UvicornWorker\nclass W(UvicornWorker):\n    async def _serve(self): ...",
     "W overrides _serve"),
    ("from uvicorn_worker import UvicornWorker\nclass W(UvicornWorker):\n    def run(self):\n"
     "        self._install_sigquit_handler()", "._install_sigquit_handler"),
])
def test_the_check_finds_what_it_looks_for(source, what) -> None:
    found = violations(ast.parse(source), package_private_names(), frozenset())
    assert any(what in v for v in found), found
