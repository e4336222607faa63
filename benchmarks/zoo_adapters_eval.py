"""Measure the adapters shipped with the world zoo on held-out conditions (other seeds than their training data),
on the shipped world base, with and without each adapter (same prompts, seeds and sampler):

* canny models (ControlNet ``canny``, T2I-Adapter ``t2i-canny``, ControlNeXt ``controlnext-canny``): edge F1 of the
  generated image's Canny edges vs the condition's edges (``tailor.eval.image_metrics.edge_f1``, 1-px tolerance);
* ``seg`` (ControlNet): mIoU of the zoo segmenter's prediction on the generated image vs the ground-truth label map
  (background + 8 shapes), and foreground IoU (object vs background, shape ignored);
* IP-Adapters ``world`` / ``world-plus``: CLIP-I-like (world-CLIP image cosine of each image to its own reference) and
  the attribute oracle's agreement with its prediction on the reference (colour, shape, pattern, background); image
  only (empty prompt, scale 1.0, the paper's image-only setting) and, on the first half, with the caption at 0.5.

Each row also gives the same metric on the real held-out renders (the oracle's ceiling).

    python benchmarks/zoo_adapters_eval.py --out outputs/zoo_adapters_eval [-n 64] [--steps 20] [--guidance 5]
        [--only canny,seg,t2i-canny,controlnext-canny,world,world-plus] [--cli-canny]

``--cli-canny`` feeds the canny models what ``tailor generate --control canny:RENDER.png`` does (OpenCV Canny of the
render, with background texture edges) instead of the world's exact outline edges they were trained on.

Writes ``<out>/scores.json`` and one grid PNG per variant.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

EVAL_SEED = 20261121  # the adapters trained on WorldDataset seed 0; these renders never appeared in training
CONTROL = ("canny", "t2i-canny", "controlnext-canny", "seg")
IP = ("world", "world-plus")
IP_ATTRS = ("color", "shape", "pattern", "background")


def held_out(n: int):
    from tailor.world import WorldDataset

    ds = WorldDataset(kind="objects", size=64, seed=EVAL_SEED, length=n, styles="all")
    return [ds.sample(i) for i in range(n)]


def generate(pipe, prompts: list[str], seed: int, steps: int, guidance: float, batch: int = 16, cond=None):
    """uint8 NxHxWx3; image i uses seed + i; ``cond`` (optional Nx3xHxW) is spread batch by batch."""
    out = []
    for i in range(0, len(prompts), batch):
        if cond is not None:
            pipe.attachments[0].inputs["image"] = cond[i : i + batch]
        res = pipe.generate(prompts[i : i + batch], n=1, seed=seed + i, steps=steps, guidance=guidance)
        out.append(res.array)
    arr = np.concatenate(out)
    return (arr * 255).round().clip(0, 255).astype(np.uint8) if arr.dtype != np.uint8 else arr


def save_grid(images: np.ndarray, path: Path, cols: int = 16) -> None:
    from PIL import Image

    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for k, im in enumerate(images):
        grid[(k // cols) * h : (k // cols + 1) * h, (k % cols) * w : (k % cols + 1) * w] = im
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


# --------------------------------------------------------------------- metrics
def edge_scores(images: np.ndarray, conds: list[np.ndarray]) -> float:
    from tailor.eval.image_metrics import canny, edge_f1

    return float(np.mean([edge_f1(canny(im), c[..., 0] > 0) for im, c in zip(images, conds)]))


def seg_scores(images: np.ndarray, labels: list[np.ndarray], segmenter: str = "segmenter") -> dict:
    from tailor.world.vocab import SHAPES
    from tailor.world.zoo.oracles import load_oracle, to_unit

    seg = load_oracle(segmenter)
    classes = list(seg.classes)
    to_oracle = np.array([classes.index("background")] + [classes.index(s) for s in SHAPES])
    with torch.no_grad():
        pred = torch.cat([seg(to_unit(images[i : i + 64])).argmax(1) for i in range(0, len(images), 64)]).numpy()
    gt = np.stack([to_oracle[lab] for lab in labels])
    inter, union = np.zeros(len(classes)), np.zeros(len(classes))
    for c in range(len(classes)):
        inter[c] = ((pred == c) & (gt == c)).sum()
        union[c] = ((pred == c) | (gt == c)).sum()
    bg = classes.index("background")
    fg_p, fg_t = pred != bg, gt != bg
    return {
        "miou": float(np.mean(inter[union > 0] / union[union > 0])),
        "foreground_iou": float((fg_p & fg_t).sum() / max((fg_p | fg_t).sum(), 1)),
        "pixel_accuracy": float((pred == gt).mean()),
    }


def ip_scores(images: np.ndarray, refs: np.ndarray) -> dict:
    from tailor.eval.world import predict_attributes
    from tailor.world.zoo.scorer import clip_image_embeds

    g, r = clip_image_embeds(list(images)), clip_image_embeds(list(refs))
    pg, pr = predict_attributes(list(images)), predict_attributes(list(refs))
    agree = {k: float(np.mean([a[k] == b[k] for a, b in zip(pg, pr)])) for k in IP_ATTRS}
    return {"clip_i_like": float((g * r).sum(-1).mean()), "agreement": agree}


# --------------------------------------------------------------------- runs
def eval_control(name, comps, samples, base_images, args) -> dict:
    import tailor
    from tailor.conditions import from_truth, truth_of_sample
    from tailor.world.zoo import ADAPTERS

    kind = ADAPTERS[name][1]
    if args.cli_canny and kind != "canny":
        raise SystemExit(f"--cli-canny measures canny models only, not {name}")
    if args.cli_canny:  # what `tailor generate --control canny:RENDER.png` feeds: OpenCV Canny of the image
        from tailor.conditions import extract

        conds = [extract("canny", s.image) for s in samples]
    else:
        conds = [from_truth(kind, s) for s in samples]
    cond = torch.from_numpy(np.stack(conds)).permute(0, 3, 1, 2).float() / 255.0
    pipe = tailor.Pipeline(comps).attach(tailor.load(name), weight=1.0, image=cond[:1])
    t = time.perf_counter()
    images = generate(pipe, [s.caption for s in samples], 0, args.steps, args.guidance, cond=cond)
    secs = time.perf_counter() - t
    pipe.detach()
    save_grid(images, Path(args.out) / f"{name}{'_cli' if args.cli_canny else ''}.png")
    real = np.stack([s.image for s in samples])
    if kind == "seg":
        labels = [truth_of_sample(s)["labels_map"] for s in samples]
        score = {"with": seg_scores(images, labels, args.segmenter),
                 "without": seg_scores(base_images, labels, args.segmenter),
                 "real_renders": seg_scores(real, labels, args.segmenter)}  # fmt: skip
    else:
        score = {"with": {"edge_f1": edge_scores(images, conds)},
                 "without": {"edge_f1": edge_scores(base_images, conds)},
                 "real_renders": {"edge_f1": edge_scores(real, conds)}}  # fmt: skip
    return {**score, "seconds": round(secs, 1)}


def eval_ip(name, comps, samples, base: dict, args) -> dict:
    import tailor

    method = tailor.load(name)
    refs = np.stack([s.image for s in samples])
    out = {}
    for key, scale in (("image_only", 1.0), ("with_caption", 0.5)):
        m = len(samples) if key == "image_only" else len(samples) // 2  # the caption run on half (CPU budget)
        t, images = time.perf_counter(), []
        for i, s in enumerate(samples[:m]):
            pipe = tailor.Pipeline(comps).attach(method, weight=scale, ip_image=s.pil())
            prompt = "" if key == "image_only" else s.caption
            images.append(generate(pipe, [prompt], i, args.steps, args.guidance)[0])
            pipe.detach()
        images = np.stack(images)
        save_grid(images, Path(args.out) / f"{name}_{key}.png")
        without = (base["empty"] if key == "image_only" else base["caption"])[:m]
        out[key] = {"scale": scale, "images": m, "with": ip_scores(images, refs[:m]),
                    "without": ip_scores(without, refs[:m]), "seconds": round(time.perf_counter() - t, 1)}  # fmt: skip
    shuffled = np.roll(refs, 1, axis=0)  # unrelated renders: the floor of CLIP-I-like
    out["other_real_renders"] = ip_scores(shuffled, refs)
    return out


def cached(out: Path, name: str, setting: dict, make) -> np.ndarray:
    """Base-model images without any adapter, kept in ``out`` so later ``--only`` runs reuse them."""
    path, meta = out / f"{name}.npy", out / f"{name}.json"
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == setting:
        return np.load(path)
    images = make()
    out.mkdir(parents=True, exist_ok=True)
    np.save(path, images)
    meta.write_text(json.dumps(setting))
    save_grid(images, out / f"{name}.png")
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/zoo_adapters_eval")
    ap.add_argument("--base", default="world", help="base model folder (default: the shipped world base)")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--only", default=",".join(CONTROL + IP))
    ap.add_argument("--segmenter", default="segmenter", help="world segmenter oracle of the seg scores")
    ap.add_argument("--cli-canny", action="store_true", help="condition = OpenCV Canny of the render (the CLI's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import tailor

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    out = Path(args.out)
    scores_path, scores = out / "scores.json", {}
    comps = tailor.load_components(args.base)
    samples = held_out(args.n)
    save_grid(np.stack([s.image for s in samples]), out / "references.png")
    setting = {"n": args.n, "steps": args.steps, "guidance": args.guidance, "sampler": "ddim", "seed": EVAL_SEED}
    pipe, prompts = tailor.Pipeline(comps), [s.caption for s in samples]
    captioned = cached(out, "base_caption", setting, lambda: generate(pipe, prompts, 0, args.steps, args.guidance))
    base = {"caption": captioned}

    def empty() -> np.ndarray:  # one by one: image i with seed i, as the IP-Adapter runs
        return np.stack([generate(pipe, [""], i, args.steps, args.guidance)[0] for i in range(args.n)])

    if any(n in IP for n in names):
        base["empty"] = cached(out, "base_empty", setting, empty)
    for name in names:
        if args.cli_canny and name not in CONTROL:
            continue
        key = f"{name} (cli canny)" if args.cli_canny else name
        if name in CONTROL:
            scores[key] = {**eval_control(name, comps, samples, base["caption"], args), "setting": setting}
        else:
            scores[key] = {**eval_ip(name, comps, samples, base, args), "setting": setting}
        print(json.dumps({key: scores[key]}), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        done = json.loads(scores_path.read_text()) if scores_path.is_file() else {}  # another run may have written
        scores_path.write_text(json.dumps({**done, key: scores[key]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
