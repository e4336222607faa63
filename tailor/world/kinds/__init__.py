"""Render kinds of ``tailor world render --kind KIND``: one module per kind in this package, found automatically.

A kind module defines ``KIND = RenderKind(...)``: its name, one line of help, its own options (``--views``,
``--relation`` ...; the command line passes them through to the kind, which reads them with :func:`parse_options`),
a ``render(seed, size=..., prompt=..., **options) -> list[Sample]`` that draws one *group* (one scene, the views of
one instance, the frames of one story), how a group is written (``layout``) and optionally ``dataset(seed, style,
size) -> Sample``, one training image for ``WorldDataset(kind=NAME)``. Adding a kind is adding a file here; nothing
else changes (the CLI, ``tailor world kinds`` and the dataset read :func:`kinds`).

Layouts (every layout also writes ``grid.png``, one row per group, and ``labels.json``: one
``Sample.labels()`` per image plus ``file``, ``mask_file`` and ``group``):

- ``flat``: ``000.png``, ``001.png``, ... one image per group;
- ``views``: ``000_0.png``, ``000_1.png``, ... the images of group 0, then group 1 (``view`` = the second number);
- ``folders``: ``000/00.png``, ``000/01.png``, ... with ``000/prompts.txt`` (one prompt per image, in order) and
  ``000/labels.json`` per group; the top ``labels.json`` lists the groups.

Masks: ``masks/<image name>.png`` beside the images (so image-folder readers never count them), an 8-bit label map:
0 is background and ``k`` the k-th entry of the image's ``objects`` (its visible part). A sample's ``extras`` (a lit
render's albedo, foreground and background, a glyph image) go to ``extras/<stem>_<name>.png``, named in the image's
``files`` label.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tailor.errors import ConfigError

if TYPE_CHECKING:
    from tailor.world.sample import Sample

LAYOUTS = ("flat", "views", "folders")


@dataclass(frozen=True)
class Option:
    """One option of a kind: ``--name VALUE`` on the command line (``-`` for ``_``), passed as ``name=value``."""

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class RenderKind:
    name: str
    help: str
    render: Callable[..., list[Sample]]
    options: tuple[Option, ...] = ()
    layout: str = "flat"
    takes_prompt: bool = False
    dataset: Callable[[int, str, int], Sample] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@functools.cache
def kinds() -> dict[str, RenderKind]:
    """Every kind module's ``KIND``, by name (sorted)."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        kind = getattr(module, "KIND", None)
        if isinstance(kind, RenderKind):
            if kind.layout not in LAYOUTS:
                raise ValueError(f"kind {kind.name!r} has layout {kind.layout!r}; one of {LAYOUTS}")
            found[kind.name] = kind
    return dict(sorted(found.items()))


def get_kind(name: str) -> RenderKind:
    table = kinds()
    if name not in table:
        raise ConfigError(f"unknown render kind {name!r} (--kind); valid kinds are: {', '.join(table)}.")
    return table[name]


def parse_options(kind: RenderKind, args: list[str]) -> dict[str, Any]:
    """Read ``--name VALUE`` / ``--name=VALUE`` pairs of ``kind``'s options (defaults for the rest)."""
    by_flag = {o.flag: o for o in kind.options}
    valid = ", ".join(by_flag) or "none"
    out = {o.name: o.default for o in kind.options}
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.partition("=")
        if flag not in by_flag:
            raise ConfigError(f"--kind {kind.name} has no option {flag!r}; its options are: {valid}.")
        opt = by_flag[flag]
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"{flag} needs a value ({opt.help or opt.type.__name__}).")
            value = args[i + 1]
            i += 1
        out[opt.name] = _convert(opt, value)
        i += 1
    return out


def _convert(opt: Option, value: str) -> Any:
    if opt.type is int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{opt.flag} must be an integer, got {value!r}.") from None
    if opt.choices is not None and value not in opt.choices:
        raise ConfigError(f"unknown {opt.flag} {value!r}; valid values are: {', '.join(opt.choices)}.")
    return value


# ------------------------------------------------------------------------------------------------- writing
def _save_png(path: Path, array_or_img) -> None:
    from PIL import Image

    from tailor.core.io import atomic_path

    img = array_or_img if isinstance(array_or_img, Image.Image) else Image.fromarray(array_or_img)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def label_map(sample: Sample) -> np.ndarray:
    """uint8 HxW: 0 background, ``k`` where the k-th object (1-based) is visible."""
    out = np.zeros(sample.image.shape[:2], np.uint8)
    for k, o in enumerate(sample.objects, 1):
        out[np.asarray(o["mask"], bool)] = k
    return out


def _write_images(folder: Path, names: list[str], samples: list[Sample], extra: list[dict]) -> list[dict]:
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, s, ex in zip(names, samples, extra):
        _save_png(folder / name, s.image)
        _save_png(folder / "masks" / name, label_map(s))
        files = {}
        for key, arr in s.extras.items():  # a lit render's albedo / foreground / background, a glyph image, ...
            files[key] = f"extras/{Path(name).stem}_{key}.png"
            (folder / "extras").mkdir(exist_ok=True)
            _save_png(folder / files[key], arr)
        rows.append(
            {"file": name, "mask_file": f"masks/{name}", **ex, **s.labels(), **({"files": files} if files else {})}
        )
    return rows


def write_groups(out: Path, kind: RenderKind, groups: list[list[Sample]], extra: dict | None = None) -> Path:
    """Write ``groups`` (lists of Samples) into ``out`` in ``kind.layout``; returns ``out``."""
    from tailor.core.images import make_grid
    from tailor.core.io import atomic_path, write_json

    out.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    labels: list[dict] = []
    for g, samples in enumerate(groups):
        if kind.layout == "flat":
            names = [f"{g:03d}.png" if len(samples) == 1 else f"{g:03d}_{v}.png" for v in range(len(samples))]
        elif kind.layout == "views":
            names = [f"{g:03d}_{v}.png" for v in range(len(samples))]
        else:
            names = [f"{v:02d}.png" for v in range(len(samples))]
        ex = [{"group": g, **({"view": v} if kind.layout == "views" else {}), **extra} for v in range(len(samples))]
        if kind.layout != "folders":
            labels += _write_images(out, names, samples, ex)
            continue
        folder = out / f"{g:03d}"
        rows = _write_images(folder, names, samples, ex)
        with atomic_path(folder / "prompts.txt") as tmp:
            Path(tmp).write_text("".join(s.caption + "\n" for s in samples))
        header = kind.extra.get("header", lambda s: {})(samples)
        write_json(folder / "labels.json", {**header, "frames": rows})
        _save_png(folder / "grid.png", make_grid([s.pil() for s in samples], cols=len(samples)))
        labels.append({"folder": f"{g:03d}", "group": g, **header, "prompts": [s.caption for s in samples]})
    write_json(out / "labels.json", labels)
    cols = max(len(s) for s in groups)
    tiles = [s.pil() for samples in groups for s in samples] if cols > 1 else [s[0].pil() for s in groups]
    _save_png(out / "grid.png", make_grid(tiles, cols=cols if cols > 1 else None))
    return out
