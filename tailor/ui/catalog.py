"""What the page offers, read from the registry and the CLI: the generate form (settings, one attachment kind per
declared flag, the remaining options), each method's training form with the defaults the CLI would use, the tool
commands, shipped names and the trained folders in the workspace.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any

from tailor.errors import TailorError
from tailor.ui.forms import config_defaults, fields
from tailor.ui.paths import UI_DIR, Workspace

#: the CLI groups the Evaluate and Convert tabs offer (every command of each, with its own options)
TOOL_GROUPS = {"evaluate": ("eval", "bench"), "convert": ("convert", "lora", "export")}
#: generate parameters the page lays out itself (prompt box, output folder, the server's base)
GENERATE_OWN = ("prompt", "out", "base", "base_config", "apply")


@cache
def generate_command():
    from tailor.cli.generate import make_generate_command

    return make_generate_command()


@cache
def train_command(method: str):
    from tailor.cli.train import make_train_command
    from tailor.core.method import get_spec

    return make_train_command(get_spec(method))


@cache
def tool_command(group: str, name: str):
    from tailor.cli import subapp

    return subapp(group).commands[name]


def _flags() -> dict:
    from tailor.compose import generate_flags

    return generate_flags()


@cache
def generate_schema() -> dict[str, Any]:
    """Settings (``GenerateConfig``), attachment kinds (every declared flag and ``--apply``) and other options."""
    from tailor.compose import shared_inputs
    from tailor.core.generation import GenerateConfig

    setting_names = {f.name for f in dataclasses.fields(GenerateConfig)}
    flags = _flags()
    cmd = generate_command()
    all_fields = {f["name"]: f for f in fields(cmd, defaults=config_defaults(GenerateConfig))}
    kinds = [
        {
            "flag": f.name,
            "methods": list(f.methods),
            "help": f.decl.help,
            "metavar": f.decl.metavar,
            "refs": f.decl.input.kind if f.decl.input else None,
            "max_weight": f.decl.max_weight,
        }
        for f in flags.values()
    ]
    kinds.append(
        {"flag": "--apply", "methods": [], "help": all_fields["apply"]["help"], "metavar": "PATH", "refs": "paths"}
    )
    attach_dests = {f.dest for f in flags.values()}
    for flag in shared_inputs(flags):  # --face, --ip-image, --id-images: reference images, uploaded
        all_fields[flag.lstrip("-").replace("-", "_")]["upload"] = True
    return {
        "settings": [f for f in all_fields.values() if f["name"] in setting_names],
        "attachments": kinds,
        "other": [
            f
            for f in all_fields.values()
            if f["name"] not in setting_names | attach_dests and f["name"] not in GENERATE_OWN
        ],
    }


def base_defaults(method: str, base: str) -> dict[str, Any]:
    """The options the base recommends for ``method`` (what ``tailor train`` prints as "base defaults")."""
    from tailor.cli.train import train_base_folder
    from tailor.core.training.defaults import base_defaults as recommended

    try:
        return dict(recommended(train_base_folder(base), method) or {})
    except TailorError:
        return {}


def train_schema(method: str, base: str) -> dict[str, Any]:
    """The method's options first, then the training options; defaults as the CLI resolves them for ``base``."""
    from tailor.core.method import get_spec
    from tailor.core.training import TrainConfig

    spec = get_spec(method)
    defaults = {**config_defaults(TrainConfig), **config_defaults(spec.config)}
    own = {f.name for f in dataclasses.fields(spec.config)}
    recommended = base_defaults(method, base)
    out = {"method": spec.name, "summary": spec.summary, "paper": spec.paper, "flag": _flag_of(spec.name)}
    method_fields, train_fields = [], []
    skip = ("base", "base_config", "out", "config", "data", "subject_images")
    for f in fields(train_command(method), skip=skip, defaults=defaults):
        if f["name"] in recommended:
            f["default"], f["from_base"] = recommended[f["name"]], True
        (method_fields if f["name"] in own or f["name"].startswith("subject_") else train_fields).append(f)
    out["method_options"], out["train_options"] = method_fields, train_fields
    return out


def _flag_of(method: str) -> str:
    from tailor.compose import flag_of

    return flag_of(method) or "--apply"


def methods() -> list[dict[str, str]]:
    from tailor.core.method import registry

    return [{"name": s.name, "summary": s.summary, "flag": _flag_of(s.name)} for s in registry().values()]


@cache
def tools_schema() -> dict[str, dict[str, dict[str, list]]]:
    """``{tab: {"group command": fields}}`` for the Evaluate and Convert tabs."""
    from tailor.cli import subapp

    return {
        tab: {f"{g} {name}": fields(cmd) for g in groups for name, cmd in subapp(g).commands.items()}
        for tab, groups in TOOL_GROUPS.items()
    }


@cache
def shipped() -> dict[str, list[str]]:
    """``{flag: [shipped names]}``: the registered artifact names by the flag that takes their method, and the
    names each method's own resolver knows (``--instantid world``)."""
    from tailor.core import resources
    from tailor.core.artifacts import resolve_artifact
    from tailor.core.io import read_metadata
    from tailor.core.method import registry

    found: dict[str, list[str]] = {}
    for name in resources.names("artifact"):
        try:
            method = read_metadata(resolve_artifact(name)).get("method")
        except TailorError:  # weights not present in this install
            continue
        if method:
            found.setdefault(_flag_of(method), []).append(name)
    for spec in registry().values():
        for name in resources.names(f"artifact:{spec.name}"):
            if name not in found.get(_flag_of(spec.name), []):
                found.setdefault(_flag_of(spec.name), []).append(name)
    return found


def subjects() -> list[str]:
    """The world's named subjects (``--data world-subject:NAME``), when the world is installed."""
    try:
        from tailor.world.subjects import subjects as named
    except ImportError:
        return []
    return list(named())


def trained(ws: Workspace, limit: int = 200) -> list[dict[str, str]]:
    """Training folders in the workspace (a ``tailor.json`` naming an artifact): path, method and its flag."""
    out = []
    for manifest in sorted(ws.root.rglob("tailor.json")):
        if UI_DIR in manifest.parts or len(out) >= limit or ws.escapes(ws.relative(manifest)):
            continue
        try:
            info = json.loads(manifest.read_text())
            method = info.get("method") or _method_of(manifest.parent / info["artifact"])
        except (OSError, ValueError, KeyError, TypeError, TailorError):
            continue
        if method:
            out.append({"path": ws.relative(manifest.parent), "method": method, "flag": _flag_of(method)})
    return out


def _method_of(file: Path) -> str | None:
    from tailor.core.io import read_metadata

    return read_metadata(file).get("method") if file.suffix == ".safetensors" else None
