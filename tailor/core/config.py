"""Config dataclasses: the one source of options (DESIGN.md #3).

A method's config is a dataclass deriving from :class:`Config`. Its fields carry defaults from the paper and a
``help`` string (``field(metadata={"help": ...})``); ``__post_init__`` validates with one-sentence messages. The
same fields generate the CLI flags (``tailor train <method> --rank 8``) and are read from YAML (``--config``),
where an unknown or wrongly typed key is an error naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from tailor.errors import ConfigError, InputError


def option(default: Any, help: str, **kw) -> Any:
    """A config field with a help string (and optional ``choices``; ``cli_default``: the command line's default
    where it differs from the API's, e.g. ``tailor generate -n 4``)."""
    meta = {"help": help}
    if "choices" in kw:
        meta["choices"] = tuple(kw.pop("choices"))
    if "cli_default" in kw:
        meta["cli_default"] = kw.pop("cli_default")
    if isinstance(default, list | dict | set):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


@dataclasses.dataclass
class Config:
    """Base of every config dataclass. Subclasses implement ``validate`` and call ``check`` in it."""

    paper: typing.ClassVar[str] = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            check_number(f.name, value)
            if choices and value not in choices:
                raise ConfigError(
                    f"{f.name}={value!r} is not one of {', '.join(map(str, choices))}; pick one of those."
                )
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for bad values (override)."""

    @staticmethod
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Config:
        """Build from a dict, coercing types; unknown keys and wrong types raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a mapping of option names to values; got {type(data).__name__}.")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in names:
                raise ConfigError(f"{source}: unknown option {key!r}; valid options are {', '.join(sorted(names))}.")
            kwargs[name] = coerce(value, hints[name], f"{source}: option {key!r}")
        return cls(**kwargs)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)


#: the bounds of every integer option (64-bit, what torch and numpy take); seeds must also be >= 0
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def check_number(name: str, value: Any) -> None:
    """Every float option (and each float of a list option) must be finite; every integer must fit in 64 bits and
    a seed must not be negative — the one place that holds every config (training, methods, generation)."""
    for v in value if isinstance(value, list | tuple) else (value,):
        if isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number; got {v}.")
        if isinstance(v, int) and not INT_MIN <= v <= INT_MAX:
            raise ConfigError(f"{name}={v} does not fit in 64 bits; use a value between {INT_MIN} and {INT_MAX}.")
        if isinstance(v, int) and (name == "seed" or name.endswith("_seed")) and v < 0:
            raise ConfigError(f"{name} must be 0 or more (at most 2**63-1); got {v}.")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a key given twice (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int):
        super().__init__(f"{key!r} line {line}")
        self.key, self.line = key, line


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist; check the path.")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except DuplicateKeyError as e:
        raise ConfigError(f"{path}: option {e.key!r} is given twice (line {e.line}); keep one.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid YAML ({e.__class__.__name__}); fix its syntax.") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option names to values.")
    return data


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type ``hint`` or raise a ConfigError naming ``where``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{where} cannot be None.")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}; got {value!r}.")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace("+", ",").split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list; got {value!r}.")
        inner = args[0] if args else Any
        out = [coerce(v, inner, where) for v in value]
        return tuple(out) if origin is tuple else out
    if hint is Any or hint is None:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where} must be true or false; got {value!r}.")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ConfigError(f"{where} must be an integer; got {value!r}.")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be an integer; got {value!r}.") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{where} must be an integer; got {value!r}.")
        return int(f)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number; got {value!r}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number; got {value!r}.") from None
    if hint is str:
        if isinstance(value, str | int | float | Path):
            return str(value)
        raise ConfigError(f"{where} must be a string; got {value!r}.")
    return value


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, Path):
        return str(v)
    return v
