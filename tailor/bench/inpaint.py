"""``tailor bench inpaint``: the world inpainting base (``inpaint``, Rombach et al. 2022's SD-inpainting recipe) vs the
plain base inpainting by mask blending (issue #21).

Each held-out scene is one world object render (photo style, seeds ``derive_seed(HELDOUT_SEED, i)``: never the
training items' ``derive_seed(seed, i, attempt)``); the mask is the object's box grown by :data:`GROW` pixels, so the
object is wholly repainted from the caption alone, and the render itself is both the image to inpaint and the exact
target. Scores:

- ``psnr_kept``: PSNR outside the mask against the render (what inpainting must keep; mask blending pastes the
  noised original back each step, the inpainting UNet must keep it by itself);
- ``psnr_mask``: PSNR inside the mask against the exact render (the object is re-drawn, not copied: low either way);
- ``shape`` / ``color`` / ``pattern`` / ``object``: the attribute oracle's agreement between the output and the
  exact render on the repainted object's shape, colour, pattern, and all three at once (the oracle sees the whole
  image; the background is kept, so these are the repainted object's);
- sampling CPU s/step and its ratio to the plain base's text-to-image step.

Rows: ``exact render`` (the oracle's own agreement: 1 by definition, PSNR infinite), ``base + blending`` (the plain
4-channel base with ``--mask``: latent blending, diffusers' behaviour), then each inpainting model given
(``world-inpaint``, shipped, by default); with ``keep_unmasked`` each generated row again with the init image pasted
back outside the mask (``--keep-unmasked``, A1111's mask blur + overlay).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailor.bench import common as C
from tailor.errors import InputError

HELDOUT_SEED = 5113
GEN_SEED = 3000
GROW = 3
ATTRS = ("shape", "color", "pattern")
QUICK = dict(scenes=2, sample_steps=2, timing_rounds=1, default_models=False)


@dataclass
class Settings:
    base: str = "world"
    out: Path = Path("outputs/bench/inpaint")
    models: dict[str, str] = field(default_factory=dict)  # name -> inpaint file, folder or shipped name
    default_models: bool = True  # add the shipped world-inpaint when present
    scenes: int = 24
    sample_steps: int = 20
    guidance: float = 5.0
    timing_rounds: int = 2
    keep_unmasked: int | None = None  # also each generated row with the init image pasted back (blur in pixels)

    def check(self) -> None:
        if min(self.scenes, self.sample_steps) < 1:
            raise InputError("--scenes and --sample-steps must be >= 1.")
        if self.keep_unmasked is not None and self.keep_unmasked < 0:
            raise InputError(f"--keep-unmasked is a blur in pixels and must be >= 0; got {self.keep_unmasked}.")


def scene(i: int, size: int) -> dict[str, Any]:
    """Held-out scene ``i``: the render, its caption and attributes, the mask (the object's box grown)."""
    from tailor.world.objects import render_object
    from tailor.world.vocab import derive_seed

    r = render_object(derive_seed(HELDOUT_SEED, i), style="photo", size=size)
    x0, y0, x1, y1 = r.box
    mask = np.zeros((size, size), bool)
    mask[max(0, y0 - GROW) : min(size, y1 + GROW), max(0, x0 - GROW) : min(size, x1 + GROW)] = True
    return {"image": r.image, "caption": r.caption, "attrs": {k: r.attrs[k] for k in ATTRS}, "mask": mask}


def masked_view(sc: dict[str, Any]) -> np.ndarray:
    """What the inpainting UNet sees: the render with the mask's region grey."""
    out = sc["image"].copy()
    out[sc["mask"]] = 127
    return out


def psnr_region(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64))[np.asarray(region, bool)]
    mse = float((d**2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def score(outs: list[np.ndarray], scenes: list[dict[str, Any]]) -> dict[str, float | None]:
    from tailor.eval.world import predict_attributes

    preds = predict_attributes(outs)
    truth = predict_attributes([sc["image"] for sc in scenes])
    kept = [psnr_region(o, sc["image"], ~sc["mask"]) for o, sc in zip(outs, scenes)]
    inside = [psnr_region(o, sc["image"], sc["mask"]) for o, sc in zip(outs, scenes)]
    row: dict[str, float | None] = {
        "psnr_kept": _mean_finite(kept),
        "psnr_mask": _mean_finite(inside),
    }
    for k in ATTRS:
        row[k] = float(np.mean([p[k] == t[k] for p, t in zip(preds, truth)]))
    row["object"] = float(np.mean([all(p[k] == t[k] for k in ATTRS) for p, t in zip(preds, truth)]))
    row["oracle_vs_caption"] = float(np.mean([t[k] == sc["attrs"][k] for t, sc in zip(truth, scenes) for k in ATTRS]))
    return row


def _mean_finite(v: list[float]) -> float | None:
    v = [x for x in v if np.isfinite(x)]
    return float(np.mean(v)) if v else None


def load_model(name: str, path: str):
    return C.load_artifact("inpainting model", name, path, "inpaint", "inpaint", "pass an inpainting model")


def models(s: Settings) -> dict[str, str]:
    return C.with_shipped(s.models, ("world-inpaint",), s.default_models)


def run(s: Settings) -> dict[str, Any]:
    from PIL import Image

    import tailor
    from tailor.bench.image_prompt import step_cost, step_seconds
    from tailor.core.progress import make_progress

    root = C.start(s)
    t0, c0 = time.perf_counter(), time.process_time()
    comps = tailor.load_components(s.base)
    size = comps.default_size
    scenes = [scene(i, size) for i in range(s.scenes)]
    given = models(s)
    generated = ["base + blending", *given]
    pasted = {f"{k} + keep-unmasked {s.keep_unmasked}": k for k in generated} if s.keep_unmasked is not None else {}
    keys = ["exact render", *generated, *pasted]
    pipe = tailor.Pipeline(comps)
    prompt = scenes[0]["caption"]
    n_show = min(6, len(scenes))
    sheet = [
        ("masked", [Image.fromarray(masked_view(sc)) for sc in scenes[:n_show]]),
    ]
    rows = []
    with make_progress() as progress:
        task = progress.add_task("inpaint", total=len(keys), info="")
        for key in keys:
            progress.update(task, info=key)
            row: dict[str, Any] = {"row": key}
            if key == "exact render":
                outs = [sc["image"] for sc in scenes]
            else:
                model = pasted.get(key, key)
                method = load_model(model, given[model]) if model in given else None
                if method is not None:
                    pipe.attach(method)
                outs = []
                for i, sc in enumerate(scenes):
                    img = pipe.generate(
                        sc["caption"],
                        n=1,
                        seed=GEN_SEED + i,
                        steps=s.sample_steps,
                        guidance=s.guidance,
                        init_image=Image.fromarray(sc["image"]),
                        mask=Image.fromarray(sc["mask"].astype(np.uint8) * 255),
                        keep_unmasked=s.keep_unmasked if key in pasted else None,
                    )
                    outs.append(np.asarray(img.images[0].convert("RGB")))
                if key in pasted:  # the same samples pasted back: the sampling cost is its row's
                    pipe.detach()
                elif method is None:
                    row |= {"sample_s_per_step": step_seconds(pipe, prompt, s.guidance), "step_cost": 1.0}
                else:
                    pipe.detach()
                    secs, ratio = step_cost(
                        pipe, lambda m=method: pipe.attach(m), pipe.detach, prompt, s.guidance, s.timing_rounds
                    )
                    row |= {"sample_s_per_step": secs, "step_cost": ratio}
            sc_row = score(outs, scenes)
            if key == "exact render":
                sc_row |= {"psnr_kept": None, "psnr_mask": None}
            rows.append(row | sc_row)
            tiles = [Image.fromarray(o) for o in outs[:n_show]]
            sheet.append((key, tiles))
            C.save_images(tiles, root / "images" / key.replace(" ", "_").replace("+", "plus"), "img")
            progress.advance(task)
    C.contact_sheet(sheet, root / "grid.png", scale=3)
    table = C.Table(
        [
            ("row", "row", ""),
            ("psnr_kept", "PSNR kept", ".2f"),
            ("psnr_mask", "PSNR mask", ".2f"),
            ("shape", "shape", ".2f"),
            ("color", "color", ".2f"),
            ("pattern", "pattern", ".2f"),
            ("object", "all three", ".2f"),
            ("sample_s_per_step", "sample s/step", ".4f"),
            ("step_cost", "x base step", ".2f"),
        ],
        rows,
    )
    extra = {"grid": ["masked", *keys], "heldout_seed": HELDOUT_SEED, "grow": GROW}
    return C.finish(root, "inpaint", s, rows, table, t0, c0, after_rows=extra)
