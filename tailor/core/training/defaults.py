"""Training defaults that fit the base at hand: a base folder may carry recommended options per method.

The papers' values (a method's ``default_lr``, ``TrainConfig``'s ``steps`` / ``batch_size``) are for Stable
Diffusion 1.5; a base of another scale learns nothing with them (the world base is ~100x smaller than SD and wants
rates 10-50x higher and a few hundred steps at most). So a base folder may hold :data:`FILE`::

    {"lora": {"lr": 0.005, "steps": 120}, "dreambooth": {"lr": 0.0001, "num_class_images": 16, ...}, ...}

one flat mapping per method (registry name) of the same names as ``tailor train <method>``'s flags (training options
and the method's options); keys starting with ``_`` are comments. A base without the file (every real SD base)
keeps the papers' values. Precedence, lowest first: method default < base defaults < ``--config`` file < flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tailor.errors import ConfigError

FILE = "tailor_defaults.json"

#: where a value came from, in increasing precedence
DEFAULT, BASE, CONFIG, FLAG = "default", "base defaults", "--config", "flag"


def base_folder(base: str | Path | None) -> Path | None:
    """The folder a base is read from: a diffusers folder itself, or the folder a registered name (``world``)
    resolves to (:mod:`tailor.core.resources`); None for a single-file checkpoint, ``tiny`` or an unknown name."""
    if base is None:
        return None
    path = Path(str(base))
    if path.is_dir():
        return path
    try:
        from tailor.core import resources  # the named-resource resolver that tailor.world registers into
    except ImportError:
        return None
    found = resources.resolve("base", str(base))
    return Path(found) if found is not None and Path(found).is_dir() else None


def defaults_file(folder: str | Path | None) -> Path | None:
    """The base folder's :data:`FILE`, or None when it has none."""
    if folder is None:
        return None
    path = Path(folder) / FILE
    return path if path.is_file() else None


def read_defaults(path: str | Path) -> dict[str, dict[str, Any]]:
    """All methods' recommended options in ``path`` (comment keys dropped); a malformed file is a ConfigError."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not a readable JSON file of training defaults ({e}); fix or delete it.") from e
    if not isinstance(data, dict) or not all(isinstance(v, dict) for k, v in data.items() if not k.startswith("_")):
        raise ConfigError(
            f'{path} must map each method name to a mapping of options, e.g. {{"lora": {{"lr": 0.005}}}}.'
        )
    return {k: {o: x for o, x in v.items() if not o.startswith("_")} for k, v in data.items() if not k.startswith("_")}


def base_defaults(base: str | Path | None, method_name: str) -> dict[str, Any]:
    """The recommended options of ``method_name`` on ``base`` (a name, a folder, or None): {} when the base carries
    none. Flat: training options (``lr``, ``steps``, ``batch_size`` ...) and method options side by side."""
    path = defaults_file(base_folder(base))
    return dict(read_defaults(path).get(method_name, {})) if path else {}


def resolve_train_options(
    method_name: str,
    base: str | Path | None,
    flags: dict[str, Any],
    config_values: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, source of each value) of one training run: base defaults < ``--config`` values < flags; a name in
    none of them is left out (the method's / ``TrainConfig``'s own default applies, source :data:`DEFAULT`)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer, source in ((base_defaults(base, method_name), BASE), (config_values or {}, CONFIG), (flags, FLAG)):
        for key, value in layer.items():
            name = str(key).replace("-", "_")
            values[name], sources[name] = value, source
    return values, sources


def describe(values: dict[str, Any], sources: dict[str, str], shown: tuple[str, ...] = (), also=()) -> str:
    """``lr=0.005 (base defaults), steps=120 (base defaults), batch_size=4 (default)``: the ``shown`` names, then
    ``also`` (e.g. every name the base's defaults set, whoever set it in the end)."""
    names = list(dict.fromkeys([*shown, *also]))
    return ", ".join(f"{k}={_fmt(values.get(k))} ({sources.get(k, DEFAULT)})" for k in names)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt(v) for v in value)
    return str(value)
