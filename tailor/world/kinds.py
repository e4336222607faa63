"""What ``tailor world render --kind KIND`` draws: one function per kind, ``(seed, size, prompt, style, **options)``.

``prompt`` (the default kind) reads a caption (:func:`tailor.world.render.render`); ``light`` and ``glyph`` read
what a prompt says about their subject (object / face / scene, lights, the quoted word, sign or plate) and draw
the rest from the seed. Other renderers register here with one entry in :data:`RENDER_KINDS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tailor.errors import ConfigError
from tailor.world.sample import Sample


def _prompt(seed: int, size: int, prompt: str | None, style: str | None, **_: Any) -> Sample:
    from tailor.world.render import render

    if not prompt:
        raise ConfigError("--kind prompt needs --prompt, e.g. --prompt 'a photo of a red striped star on grass'.")
    if style is not None:
        raise ConfigError("--style applies to --kind light and glyph; for --kind prompt put the style in the prompt.")
    return render(prompt, seed, size=size)


def _light(seed: int, size: int, prompt: str | None, style: str | None, subject: str | None = None, **_: Any):
    from tailor.world.captions import parse_prompt
    from tailor.world.light import parse_lights, render_lit

    p = parse_prompt(prompt) if prompt else {}
    if prompt and subject is None:
        subject = p["kind"] if (p["kind"] != "object" or p["shape"]) else None
    return render_lit(
        seed,
        subject=subject,
        lights=parse_lights(prompt) if prompt else None,
        shape=p.get("shape"),
        color=p.get("color"),
        pattern=p.get("pattern"),
        background=p.get("background"),
        style=style or p.get("style") or "photo",
        size=size,
    )


def _glyph(seed: int, size: int, prompt: str | None, style: str | None, text: str | None = None,
           surface: str | None = None, **_: Any) -> Sample:  # fmt: skip
    from tailor.world.captions import parse_prompt
    from tailor.world.glyphs import SURFACES, render_glyph

    p = parse_prompt(prompt) if prompt else {}
    if prompt and text is None and (quoted := re.search(r'"([^"]+)"', prompt)):
        text = quoted.group(1)
    if prompt and surface is None:
        surface = next((s for s in SURFACES if re.search(rf"\b{s}\b", prompt.lower())), None)
    return render_glyph(
        seed,
        text=text,
        surface=surface,
        background=p.get("background"),
        style=style or p.get("style") or "photo",
        size=size,
    )


RENDER_KINDS: dict[str, Callable[..., Sample]] = {"prompt": _prompt, "light": _light, "glyph": _glyph}
#: the options each kind reads (``--subject``, ``--text``, ...); giving one to another kind is an error
KIND_OPTIONS: dict[str, tuple[str, ...]] = {"prompt": (), "light": ("subject",), "glyph": ("text", "surface")}


def render_kind(kind: str, seed: int, size: int = 64, prompt: str | None = None, style: str | None = None, **options):
    """Render one image of ``kind`` (a :data:`RENDER_KINDS` key); unknown kinds raise a ConfigError listing them."""
    fn = RENDER_KINDS.get(kind)
    if fn is None:
        raise ConfigError(f"unknown --kind {kind!r}; valid render kinds are: {', '.join(RENDER_KINDS)}.")
    given = {k: v for k, v in options.items() if v is not None}
    for k in given:
        if k not in KIND_OPTIONS.get(kind, ()):
            users = [n for n, opts in KIND_OPTIONS.items() if k in opts]
            raise ConfigError(f"--{k} applies to --kind {' or '.join(users) or 'none'}, not to --kind {kind}.")
    return fn(seed, size, prompt, style, **given)
