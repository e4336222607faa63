"""Named resources: one resolver that packages above ``core`` register into, so ``core`` names none of them.

A *kind* groups what a name can stand for; a *provider* is a function ``name -> value or None`` (None: "not a name I
know"). Kinds used by ``core``:

``base``               a base model name (``world``) -> its diffusers folder (``load_components``)
``image_encoder``      an image-encoder name (``world``) -> its ``CLIPVisionModelWithProjection`` folder
``artifact``           a bare adapter name (``canny``, ``world-plus``) -> the folder ``tailor.load`` reads
``artifact:<method>``  a name given to one method (``--instantid world``) -> the folder of that method's weights
``data``               a training-data source (``world:faces``) -> ``factory(size, seed, holdout) -> (train, val)``

Providers register as ``"module:function"`` strings, so registering imports nothing; the module is imported the first
time a name of that kind is resolved. ``tailor/__init__.py`` (the top package, imported before any ``tailor.core``
module) registers the world's providers (:mod:`tailor.world.resources`); other packages or plugins call
:func:`register` the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tailor.errors import InputError

Provider = str | Callable[[str], Any]

_providers: dict[str, list[Provider]] = {}
_names: dict[str, list[Provider]] = {}
_loaded: dict[str, Callable[..., Any]] = {}


def register(kind: str, provider: Provider, names: Provider | None = None) -> None:
    """Add ``provider`` (a callable or a ``"module:function"`` string) for ``kind``; ``names`` (optional, same forms)
    lists the names it knows, for messages. Registering the same provider twice is a no-op."""
    if provider not in _providers.setdefault(kind, []):
        _providers[kind].append(provider)
    if names is not None and names not in _names.setdefault(kind, []):
        _names[kind].append(names)


def unregister(kind: str, provider: Provider) -> None:
    """Remove ``provider`` (and nothing else) from ``kind``; for tests and plugins."""
    if provider in _providers.get(kind, []):
        _providers[kind].remove(provider)


def _function(provider: Provider) -> Callable[..., Any]:
    if callable(provider):
        return provider
    if provider not in _loaded:
        module, _, attr = provider.partition(":")
        try:
            _loaded[provider] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise InputError(
                f"the named-resource provider {provider} cannot be loaded ({e}); reinstall tailor or pass a path "
                f"instead of a name."
            ) from e
    return _loaded[provider]


def resolve(kind: str, name: str) -> Any | None:
    """What ``name`` stands for under ``kind``: the first provider's answer that is not None; None if none knows it.
    A provider may raise a ``tailor.errors`` error for a name it knows but cannot serve (weights not trained)."""
    for provider in list(_providers.get(kind, ())):
        value = _function(provider)(str(name))
        if value is not None:
            return value
    return None


def names(kind: str) -> list[str]:
    """The names registered providers know for ``kind`` (for messages and listings), in registration order."""
    out: list[str] = []
    for fn in list(_names.get(kind, ())):
        out += [n for n in _function(fn)() if n not in out]
    return out


def choices(kind: str, *builtin: str) -> str:
    """``'a', 'b' or 'c'``: ``builtin`` names then the registered ones, for one-sentence errors."""
    items = [f"'{n}'" for n in dict.fromkeys([*builtin, *names(kind)])]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}" if items else "(none)"


def bare(name: str) -> bool:
    """A name without a folder part or suffix (``world``), which registered names claim before the filesystem."""
    path = Path(name)
    return len(path.parts) == 1 and not path.suffix
