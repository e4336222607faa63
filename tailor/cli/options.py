"""Generate click options from config dataclasses (the config is the only source of options, DESIGN.md #3).

Every flag defaults to "unset" so the precedence is: dataclass default < ``--config`` YAML < command-line flag.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin

import click

from tailor.core.config import Config

UNSET = object()


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(inner type, is_list) with Optional stripped."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _base_type(inner[0]) if len(inner) == 1 else (str, False)
    if origin in (list, tuple):
        return (args[0] if args else str), True
    return hint, False


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def config_options(cls: type[Config]) -> list[click.Option]:
    """One click option per dataclass field of ``cls``."""
    hints = typing.get_type_hints(cls)
    opts = []
    for f in dataclasses.fields(cls):
        hint, is_list = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = f"  [default: {default}]" if default not in (None, "", [], ()) else ""
        choices = f.metadata.get("choices")
        if get_origin(hint) is Literal:
            choices = get_args(hint)
        if hint is bool and not is_list:
            decl = [f"{flag_name(f.name)}/--no-{f.name.replace('_', '-')}"]
            opts.append(click.Option([*decl, f.name], default=None, help=help_text + shown))
            continue
        ctype: Any = {int: click.INT, float: click.FLOAT}.get(hint, click.STRING)
        if choices:
            ctype = click.Choice([str(c) for c in choices])
        opts.append(
            click.Option(
                [flag_name(f.name), f.name], type=ctype, multiple=is_list, default=None, help=help_text + shown
            )
        )
    return opts


def given(values: dict[str, Any], cls: type[Config]) -> dict[str, Any]:
    """The subset of parsed click ``values`` that belong to ``cls`` and were actually given."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for k, v in values.items():
        if k in names and v is not None and v != ():
            out[k] = list(v) if isinstance(v, tuple) else v
    return out
