"""The world AnyDoor bench: held-out objects placed into held-out scenes, scored against the exact target render.

Each case: a world instance (id drawn from a seed range the training never uses) rendered twice, a 256-px photo
of it in one scene (the object: image + mask) and a 64-px view in another scene (the target: other background,
pose, scale, light, style). Every method gets the object, the target's scene and the target's object box grown
by 1.15, and generates the scene with the object in the box (DDIM 30 steps, CFG 5, the official inference's guidance).

Scores (``tailor.eval`` oracles, which read whole 64-px scenes): the target with its box replaced by the output's
box ("inside the box") -> the instance embedder's cosine to the exact target render and the attribute oracle's
agreement with the target's shape / colour / pattern; PSNR of the output outside the box to the target (the kept
background). Rows: anydoor (a trained file), its ablations (files), and the baseline: the plain world base
inpainting the box (mask blending, ``--init-image`` + ``--mask``) with the shipped IP-Adapter-Plus (``world-plus``)
reading the object on white and an empty prompt, a Paint-by-Example-like setup.

    python -m zoo.anydoor_bench OUT [--n 48] [--row name=PATH ...] [--baseline] [--speed]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

SEED0 = 900_000_000  # held-out cases: seeds far from the training items'
STEPS, GUIDANCE = 30, 5.0
GROW = 1.15


def cases(n: int, size: int = 64) -> list[dict]:
    from tailor.methods.anydoor.hf import grow_box
    from tailor.world.pairs import instance_attrs, render_view
    from tailor.world.vocab import derive_seed, make_rng

    out = []
    for k in range(n):
        seed = SEED0 + k
        inst = instance_attrs(int(make_rng(seed, 77).integers(1 << 20)))
        obj = render_view(inst, derive_seed(seed, 1), style="photo", size=256)
        tgt = render_view(inst, derive_seed(seed, 2), size=size)
        box = grow_box(tgt.box, GROW, size, size)
        out.append({"object": obj.pil(), "mask": (obj.mask > 0).astype(np.uint8) * 255, "target": tgt.image,
                    "caption": tgt.caption, "box": box})  # fmt: skip
    return out


def on_white(case: dict) -> Image.Image:
    img = np.asarray(case["object"].convert("RGB")).copy()
    img[case["mask"] == 0] = 255
    return Image.fromarray(img)


def box_mask(box, size: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def run_anydoor(pipe, method, case: dict, seed: int, blend: bool = False):
    """AnyDoor's output; ``blend``: also keep the scene outside the box by the pipeline's mask blending
    (``--init-image SCENE --mask BOX --strength 1``), as the baseline does."""
    x0, y0, x1, y1 = case["box"]
    pipe.attach(method, object=[case["object"]], object_mask=case["mask"], scene=case["target"],
                box=f"{x0},{y0},{x1},{y1}")  # fmt: skip
    extra = {}
    if blend:
        size = case["target"].shape[0]
        extra = dict(init_image=Image.fromarray(case["target"]), strength=1.0,
                     mask=Image.fromarray(box_mask(case["box"], size).astype(np.uint8) * 255))  # fmt: skip
    try:
        r = pipe.generate("", steps=STEPS, guidance=GUIDANCE, seed=seed, sampler="ddim", **extra)
        return np.asarray(r.images[0])
    finally:
        pipe.detach(method)


def run_baseline(pipe, adapter, case: dict, seed: int):
    size = case["target"].shape[0]
    mask = Image.fromarray(box_mask(case["box"], size).astype(np.uint8) * 255)
    pipe.attach(adapter, ip_image=on_white(case))
    try:
        r = pipe.generate("", steps=STEPS, guidance=GUIDANCE, seed=seed, sampler="ddim",
                          init_image=Image.fromarray(case["target"]), mask=mask, strength=1.0)  # fmt: skip
        return np.asarray(r.images[0])
    finally:
        pipe.detach(adapter)


def scores(outputs: list[np.ndarray], cs: list[dict]) -> dict:
    from tailor.eval.image_metrics import psnr
    from tailor.eval.world import SUBJECT_ATTRS, expected_attributes, predict_attributes
    from tailor.world.zoo.oracles import load_oracle, to_unit

    size = cs[0]["target"].shape[0]
    comps, psnrs = [], []
    for out, c in zip(outputs, cs):
        m = box_mask(c["box"], size)
        comps.append(np.where(m[..., None], out, c["target"]).astype(np.uint8))
        psnrs.append(psnr(np.where(m[..., None], c["target"], out).astype(np.uint8), c["target"]) if (~m).any()
                     else float("nan"))  # fmt: skip
    inst = load_oracle("instance")
    with torch.no_grad():
        a = torch.nn.functional.normalize(inst(to_unit(comps)), dim=-1)
        b = torch.nn.functional.normalize(inst(to_unit([c["target"] for c in cs])), dim=-1)
    sim = (a * b).sum(-1)
    preds = predict_attributes(comps)
    hits = {k: [] for k in SUBJECT_ATTRS}
    allc = []
    for p, c in zip(preds, cs):
        want = {k: v for k, v in expected_attributes(c["caption"]).items() if k in SUBJECT_ATTRS}
        for k, v in want.items():
            hits[k].append(p[k] == v)
        allc.append(all(p[k] == v for k, v in want.items()))
    agree = {k: float(np.mean(v)) for k, v in hits.items()}
    return {"instance_sim": float(sim.mean()), "attribute_agreement": agree, "attributes_all": float(np.mean(allc)),
            "psnr_outside": float(np.nanmean(psnrs)), "n": len(cs)}  # fmt: skip


def sheet(cs: list[dict], rows: dict[str, list[np.ndarray]], path: Path, k: int = 8) -> None:
    """Columns: object | scene with box | target | one per row (anydoor, ablations, baseline); k cases."""
    tiles = []
    for i, c in enumerate(cs[:k]):
        size = c["target"].shape[0]
        scene = c["target"].copy()
        scene[box_mask(c["box"], size)] = 128
        sc = Image.fromarray(scene)
        ImageDraw.Draw(sc).rectangle([c["box"][0], c["box"][1], c["box"][2] - 1, c["box"][3] - 1], outline=(255, 0, 0))
        row = [on_white(c).resize((size, size)), sc, Image.fromarray(c["target"])]
        row += [Image.fromarray(rows[name][i]) for name in rows]
        tiles.append(np.concatenate([np.asarray(t.convert("RGB")) for t in row], 1))
    img = Image.fromarray(np.concatenate(tiles, 0))
    img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(path)


def speed(model: str, steps: int = 30) -> dict:
    """Sampling s/step with AnyDoor vs the plain base (same process, best of 3), trainable parameters."""
    import tailor

    cs = cases(1)
    pipe = tailor.Pipeline(tailor.load_components("world"))
    method = tailor.load(model)
    t_any, t_plain = [], []
    for _ in range(3):
        t = time.perf_counter()
        run_anydoor(pipe, method, cs[0], 0)
        t_any.append((time.perf_counter() - t) / steps)
        t = time.perf_counter()
        pipe.generate("a photo of a red star on grass", steps=steps, guidance=GUIDANCE, seed=0, sampler="ddim")
        t_plain.append((time.perf_counter() - t) / steps)
    pipe.attach(method, object=[cs[0]["object"]], object_mask=cs[0]["mask"], scene=cs[0]["target"], box="8,8,40,40")
    n_train = sum(p.numel() for p in method.trainable_parameters())
    return {"sampling_s_per_step": min(t_any), "plain_s_per_step": min(t_plain), "trainable_params": n_train,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def load_model(path: str, variant: str):
    """A trained AnyDoor file / folder, or a training checkpoint (``.../checkpoints/step-N/method.safetensors``,
    weights only: the config is the zoo variant's)."""
    import tailor
    from tailor.core.io import load_tensors, read_metadata

    if Path(path).is_file() and "format" not in read_metadata(path):
        from zoo.anydoor import VARIANTS

        method = tailor.get_spec("anydoor").method(**VARIANTS[variant])
        method.load_state_dict(load_tensors(path))
        return method
    return tailor.load(path)


def main() -> None:
    import tailor

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument(
        "--row",
        action="append",
        default=[],
        help="name=PATH[@variant] of an AnyDoor file / folder / checkpoint (variant: zoo.anydoor's)",
    )
    ap.add_argument("--blend", action="store_true", help="each --row also with mask blending outside the box")
    ap.add_argument("--baseline", action="store_true", help="add the inpainting + IP-Adapter-Plus row")
    ap.add_argument("--speed", default=None, help="an AnyDoor model: time sampling vs the plain base instead")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.speed:
        res = speed(a.speed)
        (out / "speed.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res))
        return
    cs = cases(a.n)
    pipe = tailor.Pipeline(tailor.load_components("world"))
    rows, results = {}, {}
    for spec in a.row:
        name, _, path = spec.partition("=")
        path, _, variant = path.partition("@")
        method = load_model(path, variant or "anydoor")
        for key, blend in ((name, False), (f"{name}+blend", True))[: 2 if a.blend else 1]:
            t = time.perf_counter()
            rows[key] = [run_anydoor(pipe, method, c, i, blend) for i, c in enumerate(cs)]
            results[key] = scores(rows[key], cs) | {"seconds": time.perf_counter() - t, "model": path}
            print(key, json.dumps(results[key]), flush=True)
    if a.baseline:
        adapter = tailor.load("world-plus")
        t = time.perf_counter()
        rows["inpaint+ip-adapter"] = [run_baseline(pipe, adapter, c, i) for i, c in enumerate(cs)]
        results["inpaint+ip-adapter"] = scores(rows["inpaint+ip-adapter"], cs) | {"seconds": time.perf_counter() - t}
        print("inpaint+ip-adapter", json.dumps(results["inpaint+ip-adapter"]), flush=True)
    tag = "_".join(rows)
    (out / f"bench_{tag}.json").write_text(json.dumps(results, indent=1))
    sheet(cs, rows, out / f"sheet_{tag}.png")
    for name, imgs in rows.items():
        np.save(out / f"outputs_{name}.npy", np.stack(imgs))


if __name__ == "__main__":
    main()
