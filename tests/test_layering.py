"""Layering (DESIGN.md): ``tailor.core`` imports nothing above it.

Every file under ``tailor/core`` is parsed; every import (module level or inside a function, absolute or relative,
``from tailor import world`` included) and every ``importlib.import_module("...")`` / ``__import__("...")`` with a
literal name is checked against the packages above core. ``tailor.methods`` itself may be imported (the registry
discovers the folders), a specific ``tailor.methods.<name>`` may not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tailor

CORE = Path(tailor.__file__).parent / "core"
ABOVE = (
    "tailor.world",
    "tailor.conditions",
    "tailor.faces",
    "tailor.cli",
    "tailor.bench",
    "tailor.eval",
    "tailor.demo",
)


def _forbidden(name: str) -> bool:
    if any(name == p or name.startswith(p + ".") for p in ABOVE):
        return True
    return name.startswith("tailor.methods.")  # one method's internals (the package itself is discovery)


def _absolute(node: ast.ImportFrom, module: str) -> str:
    """The absolute module an ``ImportFrom`` reads (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")[: -node.level]
    return ".".join(parts + ([node.module] if node.module else []))


def upward_imports(source: str, module: str) -> list[str]:
    """``"line: name"`` for every import of a package above core in ``source`` (the code of ``module``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            names = [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            arg = node.args[0]
            if called in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                names = [str(arg.value)]
        found += [f"{node.lineno}: {n}" for n in names if _forbidden(n)]
    return found


def _module(path: Path) -> str:
    rel = path.relative_to(CORE.parent.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_core_imports_nothing_above_it():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 20  # the walk found core
    bad = {str(p.relative_to(CORE.parent)): upward_imports(p.read_text(), _module(p)) for p in files}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"tailor/core imports packages above it: {bad}"


@pytest.mark.parametrize(
    "source",
    [
        "import tailor.world",
        "import tailor.world.zoo as zoo",
        "from tailor.world.zoo import base_path",
        "from tailor import world",
        "from tailor import conditions as c",
        "def f():\n    from tailor.faces.models import conditioning_embedder\n",
        "def f():\n    import tailor.cli.identity\n",
        "from tailor.bench import common",
        "from tailor.methods.lora.formats import to_kohya",
        "from tailor.methods import lora",
        "from ..world import zoo",  # relative, from tailor.core.x
        "from ...conditions.data import ConditionDataset",  # relative, from tailor.core.training.x
        "import importlib\nimportlib.import_module('tailor.world.zoo')",
        "__import__('tailor.conditions')",
    ],
)
def test_checker_flags_a_planted_violation(source):
    module = "tailor.core.training.data" if source.startswith("from ...") else "tailor.core.components"
    assert upward_imports(source, module), source


@pytest.mark.parametrize(
    "source",
    [
        "import tailor.methods as pkg",
        "from tailor.core.method import get_spec",
        "from tailor import errors",
        "from . import resources",
        "import importlib\nimportlib.import_module(f'tailor.methods.{name}')",  # registry discovery
        "x = 'tailor.world.resources:base'",  # a string that is no import
        "import tailor_worldly",
    ],
)
def test_checker_allows_core_and_discovery(source):
    assert upward_imports(source, "tailor.core.method") == []
