"""Forms from the CLI's own click commands, and command lines from filled forms.

The page holds no option list of its own: every form field is a parameter of the click command the CLI runs
(``tailor generate`` built from the registry's declarations, ``tailor train <method>`` from the method's config,
the ``eval`` / ``bench`` / ``convert`` / ``lora`` / ``export`` commands), so a method or option added later appears
in the page with no UI code. A filled form becomes the argument list of that command (:func:`argv`); the worker runs
it with ``tailor.cli.main`` and "show command" prints it.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from tailor.errors import ConfigError
from tailor.ui.paths import Workspace

#: parameters holding free text (never read as a path by the guard)
TEXT_NAMES = re.compile(r"prompt|caption|negative|word|token|identifier|tag")

_TYPES = {"integer": "int", "int": "int", "float": "float", "boolean": "bool", "choice": "choice", "path": "path"}


def field(p) -> dict[str, Any]:
    """One click parameter as a JSON form field (works for click's and typer's parameter classes alike)."""
    kind = getattr(p, "param_type_name", "option")
    type_name = _TYPES.get(getattr(p.type, "name", ""), "text")
    if getattr(p, "is_flag", False) or getattr(p, "is_bool_flag", False):
        type_name = "bool"
    multiple = bool(getattr(p, "multiple", False)) or (kind == "argument" and p.nargs == -1)
    default = p.default if not callable(p.default) else None
    if default is not None and not isinstance(default, int | float | str | bool | list | tuple):
        default = str(default)
    if isinstance(default, tuple):
        default = list(default)
    help_text = getattr(p, "help", None) or ""
    return {
        "name": p.name,
        "flag": max(p.opts, key=len) if kind == "option" else None,
        "kind": kind,
        "type": type_name,
        "choices": [str(c) for c in getattr(p.type, "choices", ())] or None,
        "multiple": multiple,
        "required": bool(p.required),
        "default": default,
        "help": re.sub(r"\s*\[default: .*\]\s*$", "", help_text),
        "upload": type_name == "path",  # the page offers an upload (into the workspace) beside the field
    }


def fields(cmd, skip: tuple[str, ...] = (), defaults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The form fields of ``cmd``; ``defaults`` gives the value an unset option resolves to (the CLI's options
    generated from a config default to "unset", so the config's own default is shown instead)."""
    out = []
    for p in cmd.params:
        if p.name in skip or p.name == "help" or getattr(p, "hidden", False):
            continue
        f = field(p)
        if defaults and f["default"] in (None, []) and defaults.get(p.name) is not None:
            f["default"] = defaults[p.name]
        out.append(f)
    return out


def config_defaults(cls) -> dict[str, Any]:
    """A config dataclass's defaults (a ``cli_default`` in a field's metadata wins: what the command line uses)."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        if "cli_default" in f.metadata:
            out[f.name] = f.metadata["cli_default"]
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _values(value) -> list[str]:
    if value is None or value == "" or value == []:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [str(v) for v in items if v is not None and str(v).strip() != ""]


def check_value(ws: Workspace, p, value: str) -> None:
    """Refuse a value of a path-like parameter that points outside the workspace (a path-typed parameter always
    counts as one; a text parameter unless its name says it holds free text, like a prompt)."""
    if field(p)["type"] != "path" and TEXT_NAMES.search(p.name or ""):
        return
    if ws.escapes(value):
        name = max(p.opts, key=len) if p.opts else p.name
        raise ConfigError(f"{name} {value!r} is outside the workspace {ws.root}; pick a file or folder inside it.")


def argv(cmd, values: dict[str, Any], ws: Workspace) -> list[str]:
    """The arguments of ``cmd`` for ``values`` (``{param name: value or list}``; empty values are left out, so the
    CLI applies its own defaults); every path-like value is checked against the workspace."""
    known = {p.name: p for p in cmd.params}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{cmd.name} has no option {unknown[0]!r}; reload the page.")
    args: list[str] = []
    positional: list[str] = []
    for p in cmd.params:
        if p.name not in values:
            continue
        value = values[p.name]
        if field(p)["type"] == "bool":
            if value in (None, ""):
                continue
            on = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
            if on:
                args.append(p.opts[0])
            elif p.secondary_opts:
                args.append(p.secondary_opts[0])
            continue
        items = _values(value)
        if p.required and not items:
            raise ConfigError(f"{cmd.name} needs {max(p.opts, key=len)}; fill it in.")
        for item in items:
            if field(p)["type"] in ("path", "text"):
                check_value(ws, p, item)
            if getattr(p, "param_type_name", "option") == "argument":
                positional.append(item)
            else:
                args += [max(p.opts, key=len), item]
    return args + (["--"] if any(a.startswith("-") for a in positional) else []) + positional  # "-x" as a value


def attachment_value(ws: Workspace, flag: str, a: dict[str, Any], shipped: set[str]) -> str:
    """One ``PATH[=REF+REF][:weight[:start:end]]`` value from the page's attachment row (``path``, ``refs``,
    ``weight``, ``start``, ``end``); the path may be a shipped name, the references are workspace files."""
    path = str(a.get("path") or "").strip()
    if not path:
        raise ConfigError(f"an attachment of {flag} names no file; pick a trained folder or a shipped name.")
    if path not in shipped:
        ws.path(path, f"{flag} file")
    refs = _values(a.get("refs"))
    for ref in refs:
        ws.path(ref, f"{flag} reference")
    text = path + ("=" + "+".join(refs) if refs else "")
    weight, start, end = (a.get(k) for k in ("weight", "start", "end"))
    ranged = start not in (None, "") and end not in (None, "") and (float(start), float(end)) != (0.0, 1.0)
    if weight not in (None, "") or ranged:
        text += f":{float(1.0 if weight in (None, '') else weight):g}"
        if ranged:
            text += f":{float(start):g}:{float(end):g}"
    return text


def command_line(args: list[str], ws: Workspace) -> str:
    """The shell line a person runs for the same job (in the workspace folder)."""
    return f"cd {shlex.quote(str(ws.root))} && " + shlex.join(["tailor", *args])
