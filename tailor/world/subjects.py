"""Personalization subjects: a known shape (so the class word exists) with a look base training never shows.

Base objects have one colour; a subject has two (``colors=(c1, c2)``: body and pattern), may wear the
subject-only patterns ``halves``/``rings``, and may carry a decal (dot/ring/bar/cross at its centre,
in black or white, whichever contrasts). It is rendered in varied poses, backgrounds and styles; its
caption uses only the class word ("a photo of a star on grass"), as DreamBooth-style training expects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tailor.errors import ConfigError
from tailor.world.backgrounds import background as make_background
from tailor.world.captions import N_TEMPLATES, caption_for
from tailor.world.draw import edges_from_labels
from tailor.world.objects import object_entry, paint_object, sample_pose
from tailor.world.sample import Sample
from tailor.world.styles import apply_style
from tailor.world.vocab import (
    BACKGROUNDS,
    COLORS,
    canonical,
    check_seed,
    check_size,
    luminance,
    make_rng,
    pick,
)

_KEYS = ("shape", "pattern", "colors", "decal")


@dataclass(frozen=True)
class SubjectSpec:
    """A subject: ``shape`` (its class word), a two-colour ``pattern``, ``colors=(body, pattern)``, optional decal."""

    shape: str
    pattern: str
    colors: tuple[str, str]
    decal: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", canonical("shape", self.shape))
        object.__setattr__(self, "pattern", canonical("subject pattern", self.pattern))
        colors = tuple(self.colors) if not isinstance(self.colors, str) else tuple(self.colors.split("+"))
        if len(colors) != 2:
            raise ConfigError(
                f"a subject needs exactly two colours joined by '+' (e.g. colors=orange+white), got {self.colors!r}."
            )
        colors = tuple(canonical("color", c) for c in colors)
        if colors[0] == colors[1]:
            raise ConfigError(
                f"a subject's two colours must differ, got {'+'.join(colors)}; pick two of: {', '.join(COLORS)}."
            )
        object.__setattr__(self, "colors", colors)
        if self.decal in ("", "none", "None"):
            object.__setattr__(self, "decal", None)
        object.__setattr__(self, "decal", canonical("decal", self.decal))

    @classmethod
    def parse(cls, text: str) -> SubjectSpec:
        """Parse ``"shape=star,pattern=checker,colors=orange+white[,decal=ring]"`` or a built-in subject name."""
        text = str(text).strip()
        builtin = subjects()
        if text in builtin:
            return builtin[text]
        fields: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep:
                raise ConfigError(
                    f"subject spec part {part!r} is not key=value; write e.g. "
                    f"'shape=star,pattern=checker,colors=orange+white' or use a built-in name: {', '.join(builtin)}."
                )
            if key == "color":
                key = "colors"
            if key not in _KEYS:
                raise ConfigError(f"unknown subject spec key {key!r}; valid keys are: {', '.join(_KEYS)}.")
            fields[key] = value.strip()
        missing = [k for k in ("shape", "pattern", "colors") if k not in fields]
        if missing:
            raise ConfigError(
                f"subject spec {text!r} lacks {', '.join(missing)}; write e.g. 'shape=star,pattern=checker,"
                f"colors=orange+white' (keys: {', '.join(_KEYS)})."
            )
        return cls(fields["shape"], fields["pattern"], fields["colors"], fields.get("decal"))

    def __str__(self) -> str:
        s = f"shape={self.shape},pattern={self.pattern},colors={'+'.join(self.colors)}"
        return s + (f",decal={self.decal}" if self.decal else "")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["colors"] = list(self.colors)
        return d

    @property
    def class_word(self) -> str:
        return self.shape


_BUILTIN = {
    "checker_star": ("star", "checkered", ("orange", "white"), None),
    "zebra_heart": ("heart", "striped", ("black", "white"), None),
    "ladybug_circle": ("circle", "dotted", ("red", "black"), None),
    "target_square": ("square", "rings", ("red", "white"), "dot"),
    "split_triangle": ("triangle", "halves", ("green", "pink"), "bar"),
    "candy_cross": ("cross", "striped", ("pink", "white"), "ring"),
    "harlequin_diamond": ("diamond", "checkered", ("purple", "yellow"), None),
    "ringed_hexagon": ("hexagon", "rings", ("blue", "yellow"), "cross"),
}


def subjects() -> dict[str, SubjectSpec]:
    """The built-in named subjects, name -> :class:`SubjectSpec`."""
    return {name: SubjectSpec(*args) for name, args in _BUILTIN.items()}


def _decal_color(colors: tuple[str, str]) -> tuple[int, int, int]:
    mean = (luminance(COLORS[colors[0]]) + luminance(COLORS[colors[1]])) / 2
    return (20, 20, 20) if mean > 0.45 else (245, 245, 245)


def render_subject(
    spec: SubjectSpec | str,
    seed: int,
    *,
    background: str | None = None,
    style: str = "photo",
    size: int = 64,
    template: int | None = None,
) -> Sample:
    """Subject ``spec`` (SubjectSpec, spec string or built-in name) in a pose and background drawn from ``seed``."""
    if not isinstance(spec, SubjectSpec):
        spec = SubjectSpec.parse(spec)
    seed, size = check_seed(seed), check_size(size)
    background, style = canonical("background", background), canonical("style", style)
    rng = make_rng(seed)
    background = pick(rng, BACKGROUNDS, background)
    drawn_template = int(rng.integers(N_TEMPLATES))
    template = drawn_template if template is None else int(template)
    pose = sample_pose(rng, size, scale=(0.24, 0.38), max_rot=25.0)
    canvas = make_background(background, rng, size)
    labels = np.zeros((size, size), np.uint8)
    c1, c2 = (COLORS[c] for c in spec.colors)
    paint_object(canvas, labels, 1, spec.shape, pose, c1, spec.pattern, c2, spec.decal, _decal_color(spec.colors))
    obj = object_entry(labels, 1, **spec.as_dict(), **pose)
    attrs = {"kind": "subject", **spec.as_dict(), "spec": str(spec), "background": background, "style": style}
    attrs |= {"template": template, "size": size, "seed": seed, **pose}
    return Sample(
        image=apply_style(canvas, style, rng),
        caption=caption_for(attrs, template),
        attrs=attrs,
        mask=obj["mask"],
        box=obj["box"],
        edges=edges_from_labels(labels),
        objects=[obj],
    )
