"""Synthesis methods of ``tailor synth --method NAME``: a sampled :class:`~tailor.synth.stats.Layout` in, an image out.

A method is a :class:`SynthMethod` subclass registered in :data:`SYNTH_METHODS`; ``tailor synth`` fits the layouts,
filters and writes the data around it, so ODGEN (image-list + text-list ControlNet) is one more class here.

- ``layout``: a layout ControlNet (Zhang et al. 2023; the GLIGEN/ODGEN-style boxes image of
  :func:`tailor.conditions.layout_image`: each box filled with its class colour, white outline) on the base, prompted
  with the layout's caption. Default ControlNet: the world's shipped ``layout`` adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tailor.errors import ConfigError, InputError
from tailor.synth.stats import Layout


class SynthMethod:
    """Makes one image per layout; ``options`` are the method's own settings (recorded in the output)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init__(self, base: str = "world", steps: int = 20, guidance: float = 7.5, **options: Any):
        self.base, self.steps, self.guidance, self.options = base, int(steps), float(guidance), options
        if self.steps < 1:
            raise ConfigError(f"--steps must be at least 1; got {steps}.")

    def settings(self) -> dict[str, Any]:
        """What decides the images (a resumed run must give the same)."""
        return {"method": self.name, "base": self.base, "steps": self.steps, "guidance": self.guidance,
                **{k: str(v) for k, v in self.options.items()}}  # fmt: skip

    def setup(self) -> None:
        raise NotImplementedError

    def generate(self, layout: Layout, seed: int) -> np.ndarray:
        raise NotImplementedError


class LayoutControlNet(SynthMethod):
    name = "layout"
    summary = "layout ControlNet (boxes image) on the base, prompted with the layout's caption"

    def setup(self) -> None:
        import tailor
        from tailor.core.artifacts import load

        control = self.options.get("control") or "layout"
        comps = tailor.load_components(self.base)
        try:
            method = load(control)
        except InputError:
            if control == "layout":
                raise InputError(
                    "no layout ControlNet is shipped in this install; pass --control with one trained by `tailor "
                    "train controlnet --condition layout`."
                ) from None
            raise
        if getattr(method, "name", None) != "controlnet" or method.config.condition != "layout":
            raise ConfigError(f"--control {control} is not a layout ControlNet; train one with --condition layout.")
        self.pipe = tailor.Pipeline(comps).attach(method, weight=float(self.options.get("scale", 1.0)))

    def generate(self, layout: Layout, seed: int) -> np.ndarray:
        from tailor.conditions import layout_image
        from tailor.world.vocab import SHAPES

        labels = [SHAPES.index(o["class"]) + 1 if o["class"] in SHAPES else 1 for o in layout.objects]
        self.pipe.attachments[0].inputs["image"] = layout_image([o["box"] for o in layout.objects], labels,
                                                                layout.size)  # fmt: skip
        result = self.pipe.generate(layout.caption, n=1, seed=seed, steps=self.steps, guidance=self.guidance,
                                    width=layout.size, height=layout.size)  # fmt: skip
        return np.asarray(result.images[0].convert("RGB"))


SYNTH_METHODS: dict[str, type[SynthMethod]] = {"layout": LayoutControlNet}


def get_synth_method(name: str) -> type[SynthMethod]:
    if name not in SYNTH_METHODS:
        raise ConfigError(f"unknown --method {name!r}; available: {', '.join(SYNTH_METHODS)}.")
    return SYNTH_METHODS[name]


def control_path(value: str | Path | None) -> str | None:
    return None if value is None else str(value)
