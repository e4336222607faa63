"""Inpainting on the world: a 9-channel inpainting base vs latent blending on the 4-channel base, against ground truth.

Each case is a fresh single-object photo render (seeds the training never drew). Two tasks, each with strength 1:

* ``object``: the object's box (grown by ``--grow`` px) is masked and the caption asks for the object back. Scored:
  the attribute oracle's accuracy (shape, colour, pattern named by the caption) on the result, and PSNR inside the
  mask against the render (the object's pose is free, so this is a loose fidelity measure).
* ``background``: a random box away from the object is masked, the caption is the render's own; PSNR inside the mask
  against the render (background continuation) and the oracle's background accuracy.

Both report PSNR outside the mask (how much of the kept region survives; latent blending keeps it up to the VAE's
round trip, the inpainting UNet regenerates it) and, as the ceiling, the VAE round trip of the render itself.

    python benchmarks/inpaint_eval.py --inpaint-base RUN/pipeline --out outputs/inpaint_eval [--cases 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def cases(n: int, seed: int, grow: int) -> list[dict]:
    from tailor.world.captions import caption_for
    from tailor.world.objects import render_object

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = render_object(1_000_000 + seed * 10_000 + i, style="photo")
        x0, y0, x1, y1 = s.box
        obj = np.zeros(s.mask.shape, np.uint8)
        obj[max(y0 - grow, 0) : y1 + grow, max(x0 - grow, 0) : x1 + grow] = 255
        bg = None
        for _ in range(50):  # a 20x20 box that does not touch the object's grown box
            bx, by = rng.integers(0, 64 - 20, 2)
            cand = np.zeros_like(obj)
            cand[by : by + 20, bx : bx + 20] = 255
            if not (cand & obj).any():
                bg = cand
                break
        out.append({"image": s.pil(), "caption": caption_for(s.attrs, template=0), "object": obj, "background": bg})
    return out


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    sel = region.astype(bool)
    mse = float(((a[sel] - b[sel]) ** 2).mean())
    return 10 * np.log10(1.0 / max(mse, 1e-10))


@torch.no_grad()
def roundtrip(comps, image: Image.Image) -> np.ndarray:
    from tailor.core.images import to_tensor

    vae = comps.vae
    y = vae.decode(vae.encode(to_tensor(image)[None]).latent_dist.mean).sample
    return ((y[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)


def run(comps, items: list[dict], task: str, args, folder: Path) -> dict:
    import tailor
    from tailor.core.images import make_grid
    from tailor.eval.world import expected_attributes, predict_attributes

    folder.mkdir(parents=True, exist_ok=True)
    pipe = tailor.Pipeline(comps)
    outs, ins, outside, ceil_in, prompts, tiles = [], [], [], [], [], []
    t0 = time.time()
    for i, it in enumerate(items):
        mask = it[task]
        if mask is None:
            continue
        res = pipe.generate(it["caption"], seed=args.seed + i, steps=args.steps, guidance=args.guidance,
                            init_image=it["image"], mask=Image.fromarray(mask))  # fmt: skip
        gen, real = res.array[0], np.asarray(it["image"], np.float32) / 255
        rt = roundtrip(comps, it["image"])
        ins.append(psnr(gen, real, mask))
        outside.append(psnr(gen, real, 255 - mask))
        ceil_in.append(psnr(rt, real, mask))
        outs.append(res.images[0])
        prompts.append(it["caption"])
        if len(tiles) < 24:
            shown = np.asarray(it["image"]).copy()
            shown[mask > 0] = (shown[mask > 0] * 0.4 + 150).astype(np.uint8)
            tiles += [Image.fromarray(shown), res.images[0]]
    make_grid(tiles, cols=8).resize((8 * 66 * 2, len(tiles) // 8 * 66 * 2), Image.NEAREST).save(folder / "grid.png")
    preds = predict_attributes(outs)
    keys = ("shape", "color", "pattern", "background")
    hits = {k: [p[k] == expected_attributes(q).get(k) for p, q in zip(preds, prompts)] for k in keys}
    return {
        "cases": len(outs),
        "psnr_in_mask": float(np.mean(ins)),
        "psnr_outside_mask": float(np.mean(outside)),
        "psnr_in_mask_vae_ceiling": float(np.mean(ceil_in)),
        "oracle_accuracy": {k: float(np.mean(v)) for k, v in hits.items()},
        "object_correct": float(np.mean([all(hits[k][i] for k in keys[:3]) for i in range(len(outs))])),
        "seconds": time.time() - t0,
    }


def load_base(path: str, plain: str):
    """Components of a base folder / name, or ``plain`` with an inpaint checkpoint's weights patched in."""
    import tailor
    from tailor.core.io import load_tensors
    from tailor.methods.inpaint import InpaintMethod

    if not str(path).endswith(".safetensors"):
        return tailor.load_components(path)
    comps = tailor.load_components(plain)
    method = InpaintMethod()
    method.load_state_dict(load_tensors(path))
    method.patch(comps)
    return comps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="outputs/inpaint_eval")
    ap.add_argument("--base", default="world", help="the 4-channel base (latent blending)")
    ap.add_argument(
        "--inpaint-base",
        required=True,
        help="the 9-channel inpainting base: a diffusers folder, or a training checkpoint's method.safetensors "
        "(applied to --base)",
    )
    ap.add_argument("--cases", type=int, default=64)
    ap.add_argument("--grow", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-blend", action="store_true", help="only the inpainting base")
    args = ap.parse_args()
    torch.set_num_threads(1)

    out = Path(args.out)
    items = cases(args.cases, args.seed, args.grow)
    scores: dict = {"settings": vars(args)}
    for label, base in (("blend_4ch", args.base), ("inpaint_9ch", args.inpaint_base)):
        if label == "blend_4ch" and args.skip_blend:
            continue
        comps = load_base(base, args.base)
        for task in ("object", "background"):
            scores[f"{label}/{task}"] = run(comps, items, task, args, out / label / task)
            print(label, task, json.dumps(scores[f"{label}/{task}"]))
    (out / "scores.json").write_text(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
