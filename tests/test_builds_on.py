"""``MethodSpec.builds_on`` is true (DESIGN.md #4): a method folder reaches exactly the registered methods it names
there, and only through the registry (``get_spec("<name>")``), never by importing another method's folder."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tailor
from tailor.core.method import method_names, registry

METHODS = Path(tailor.__file__).parent / "methods"


def uses(source: str, own: str) -> tuple[set[str], set[str]]:
    """(methods reached with ``get_spec("<name>")``, other method folders imported) in ``source`` of method ``own``."""
    via_registry, imported = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if called == "get_spec":
                via_registry.add(str(node.args[0].value).replace("-", "_"))
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[:2] == ["tailor", "methods"] and len(parts) > 2 and parts[2] != own:
                imported.add(parts[2])
    return via_registry, imported


@pytest.mark.parametrize("name", method_names())
def test_builds_on_lists_what_the_method_uses(name):
    via_registry, imported = set(), set()
    for path in sorted((METHODS / name).rglob("*.py")):
        r, i = uses(path.read_text(), name)
        via_registry |= r
        imported |= i
    assert not imported, f"{name} imports other methods' folders {sorted(imported)}; compose them through get_spec"
    assert set(registry()[name].builds_on) == via_registry, (
        f"{name}: SPEC.builds_on {sorted(registry()[name].builds_on)} but the folder uses {sorted(via_registry)}"
    )


def test_checker_sees_registry_use_and_imports():
    src = (
        "from tailor.core.method import get_spec\n"
        "def f():\n    return get_spec('controlnet').method, method.get_spec('ip-adapter')\n"
        "from tailor.methods.lora.formats import to_kohya\n"
        "from tailor.methods import dreambooth\n"
        "from tailor.methods.pulid.config import PuLIDConfig\n"
    )
    assert uses(src, "pulid") == ({"controlnet", "ip_adapter"}, {"lora", "dreambooth"})
