"""The world ODGEN (``odgen``, Zhu et al. 2024): ``python -m zoo.odgen STAGE``.

1. ``train``: ``tailor.train`` of the ``odgen`` method on ``world:relation:photo`` (2-3-object scenes, ``a <class>``
   texts, foreground-weighted loss), the ControlNet started from the shipped ``layout`` ControlNet (same base, trained
   on the same scenes' boxes), the list encoders from scratch. Recipe ``bank`` (the default): each object of the image
   list is the base-generated image of its attributes from an object bank cached in ``<runs>/odgen/bank.safetensors``
   (made before the first step, as synthesis makes them), and the UNet's caption is empty for 30% of the samples and
   class-only (no colour or pattern words) for 30% of the rest. Recipe ``crops`` (the first shipped model): the
   scene's own blurred crops, 50% empty captions.
2. ``export``: the trained weights as float16 into ``tailor/world/zoo/weights/adapters/odgen/`` (recipe ``bank``:
   with ``list_guidance`` on, so sampling pushes towards the image list; docs/odgen.md).

3. ``sheet``: a contact sheet of two ``tailor synth`` outputs of the same real set and seed (the same layouts): per
   candidate the layout ControlNet's image and ODGEN's, 4x enlarged, boxes drawn (green: kept by the filter, red:
   failed it), class initials.
4. ``colours``: do the image list's colours appear (:func:`colours`)?

The detector bench is ``python -m tailor.synth.bench`` on ``tailor synth --method odgen`` output (docs/odgen.md).
Resumable (checkpoints every 100 steps); run with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

DATA = "world:relation:photo"
STEPS, BATCH, LR = 1500, 8, 1e-4
NAME = "odgen"
RECIPES = ("bank", "crops")


def run_dir(runs: str | Path, recipe: str = "bank") -> Path:
    return Path(runs) / "odgen" / ("run" if recipe == "crops" else f"run_{recipe}")


def recipe_options(runs: str | Path, recipe: str = "bank") -> dict:
    """The method options of a recipe: ``bank`` (object bank + class-only captions) or ``crops`` (scene crops)."""
    if recipe == "crops":
        return {"init": "layout"}
    if recipe == "bank":
        bank = Path(runs) / "odgen" / "bank.safetensors"
        return {"init": "layout", "object_bank": str(bank), "empty_prompts": 0.3, "plain_prompts": 0.3}
    raise ValueError(f"unknown odgen recipe {recipe!r}; use one of {', '.join(RECIPES)}.")


def train(runs: str | Path, steps: int = STEPS, recipe: str = "bank", **options):
    import tailor
    from zoo import grouped

    method = tailor.get_spec("odgen").method(**(recipe_options(runs, recipe) | options))
    return grouped.train(method, run_dir(runs, recipe), DATA, steps, BATCH, LR)


def export(runs: str | Path, weights: str | Path | None = None, recipe: str = "bank") -> Path:
    """The trained ODGEN as float16 into ``weights/adapters/odgen/``."""
    from tailor.world.zoo import WEIGHTS
    from zoo import grouped

    info = {"recipe": f"zoo/odgen.py {recipe}", "base": "world", "data": DATA, "batch_size": BATCH, "lr": LR,
            "options": recipe_options(".", recipe) | {"object_bank": recipe == "bank"}}  # fmt: skip
    # the file carries its ControlNet; the bank was a training cache; the bank model samples with list guidance
    config = {"init": "none", "object_bank": ""} | ({"list_guidance": True} if recipe == "bank" else {})
    dst = Path(weights or WEIGHTS) / "adapters" / NAME
    return grouped.export(run_dir(runs, recipe), dst, "odgen.safetensors", info, config)


def sheet(a: str | Path, b: str | Path, out: str | Path, n: int = 16, scale: int = 4) -> Path:
    """Rows of (``a``'s candidate i | ``b``'s candidate i) for the first ``n`` candidates, two rows per line."""
    from PIL import Image, ImageDraw

    from tailor.core.images import make_grid

    tiles = []
    for i in range(n):
        for folder in (Path(a), Path(b)):
            rec = json.loads((folder / "records" / f"{i:06d}.json").read_text())
            with Image.open(folder / rec["file"]) as im:
                tile = im.convert("RGB").resize((rec["size"] * scale,) * 2, Image.NEAREST)
            draw = ImageDraw.Draw(tile)
            for o, ok in zip(rec["objects"], rec["passed"] or [True] * len(rec["objects"])):
                x0, y0, x1, y1 = (v * scale for v in o["box"])
                color = (40, 220, 40) if ok else (230, 30, 30)
                draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=2)
                draw.text((x0 + 3, y0 + 1), o["class"][:2], fill=color)
            tiles.append(tile)
    out = Path(out)
    make_grid(tiles, cols=8).save(out)
    return out


COLOUR_CASES = (("as list", ("red", "blue")), ("swapped", ("blue", "red")), ("none", (None, None)))


def colours(models: list[str], out: str | Path, seeds: int = 4, list_guidance: bool = False) -> dict:
    """Do the image list's colours appear? A red circle (left box) and a blue square (right box) on grass, each object
    generated by the base as at synthesis; the caption names the list's colours (``as list``), the other way round
    (``swapped``) or none. Per model and case, over ``seeds`` seeds: in how many images the left box's mean colour is
    redder than blue (the list's red) and the right box's bluer than red (the list's blue); a sheet (one row per model
    and case). A base that paints both objects one colour scores ``seeds`` in one box and 0 in the other.
    ``list_guidance``: sample with the ODGEN option of that name (the empty list in the unconditional half)."""
    from PIL import Image

    import tailor
    from tailor.core.artifacts import load
    from tailor.core.images import make_grid

    boxes = ([6, 20, 28, 42], [36, 20, 58, 42])
    objs = [{"name": "circle", "color": "red", "box": boxes[0]}, {"name": "square", "color": "blue", "box": boxes[1]}]
    layout = {"size": 64, "objects": objs, "relations": [], "background": "grass", "style": "photo"}
    comps = tailor.load_components("world")
    result, tiles = {}, []
    for model in models:
        method = load(model)
        method.config.list_guidance = bool(list_guidance)
        for case, (a, b) in COLOUR_CASES:
            words = f"a {a} circle and a {b} square" if a else "a circle and a square"
            hits = [0, 0]
            for seed in range(seeds):
                pipe = tailor.Pipeline(comps).attach(method, layout=layout, object_seed=seed)
                img = np.asarray(pipe.generate(f"a photo of {words} on grass", n=1, seed=seed, steps=20).images[0])
                for k, ((x0, y0, x1, y1), sign) in enumerate(zip(boxes, (1, -1))):
                    rgb = img[y0:y1, x0:x1].reshape(-1, 3).astype(float).mean(0)
                    hits[k] += int((rgb[0] - rgb[2]) * sign > 0)
                tiles.append(Image.fromarray(img).resize((128, 128), Image.NEAREST))
            result[f"{model} | {case}"] = {"left red": hits[0], "right blue": hits[1], "of": seeds}
            print(f"{model} | caption colours {case}: left box red in {hits[0]} of {seeds}, right box blue in "
                  f"{hits[1]} of {seeds}", flush=True)  # fmt: skip
    make_grid(tiles, cols=seeds).save(out)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.odgen", description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=("train", "export", "sheet", "colours"))
    p.add_argument("--model", action="append", help="colours: an ODGEN model (repeatable)")
    p.add_argument("--list-guidance", action="store_true", help="colours: sample with list_guidance")
    p.add_argument("--a", help="sheet: the first synth output (left of each pair)")
    p.add_argument("--b", help="sheet: the second synth output (right of each pair)")
    p.add_argument("--out", help="sheet: the PNG to write")
    p.add_argument("--runs", default="outputs/zoo_runs")
    p.add_argument("--recipe", choices=RECIPES, default="bank", help="train / export: which recipe (docs/odgen.md)")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    if args.stage == "train":
        train(args.runs, args.steps or STEPS, args.recipe)
    elif args.stage == "export":
        print(export(args.runs, recipe=args.recipe))
    elif args.stage == "colours":
        out = args.out or "odgen_colours.png"
        print(json.dumps(colours(args.model or ["odgen"], out, list_guidance=args.list_guidance), indent=1))
    else:
        print(sheet(args.a, args.b, args.out))
    print(f"{args.stage}: {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
