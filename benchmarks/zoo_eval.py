"""Measure the world base model with the zoo's oracles: generate from single-object photo prompts of the training
distribution (and from held-out shape/colour combinations), score per-attribute accuracy, CLIP-T-like and an
FID-like distance in world-CLIP space against fresh real renders of the same prompts; the oracle's accuracy on those
renders, raw and through the base's VAE (encode, decode: the most a generator of latents could reach).

    python benchmarks/zoo_eval.py --out outputs/zoo_eval [--base DIR] [--prompts 50] [-n 4] [--guidance 5]
        [--face-prompts 12]

Faces (issue #7, the continued-training base): prompts like "a photo of a woman on snow" in every style; the share
the world face detector calls a face, background / style accuracy, and an FID-like distance in the face oracle's
embedding space against real face renders of the same prompts (random identities).

Writes ``<out>/train/*.png``, ``<out>/holdout/*.png`` and ``<out>/faces/*.png`` with ``generation.json`` (so
``tailor eval world --images`` reads them too) and ``<out>/scores.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def photo_prompts(n: int, seed: int, holdout: bool) -> list[tuple[str, dict]]:
    from tailor.world.captions import caption_for
    from tailor.world.vocab import BACKGROUNDS, COLORS, PATTERNS, SHAPES, make_rng
    from tailor.world.zoo.cli import find_recipes

    find_recipes()  # the checkout's zoo/ (the recipes are not installed) onto sys.path
    from zoo.unet import holdout_combos

    combos = holdout_combos()
    rng = make_rng(seed)
    out = []
    while len(out) < n:
        a = {
            "kind": "object",
            "shape": SHAPES[rng.integers(len(SHAPES))],
            "color": list(COLORS)[rng.integers(10)],
            "pattern": PATTERNS[rng.integers(len(PATTERNS))],
            "background": BACKGROUNDS[rng.integers(7)],
            "style": "photo",
        }
        if holdout:
            a["shape"], a["color"] = combos[len(out) % len(combos)]
        elif (a["shape"], a["color"]) in combos:
            continue
        out.append((caption_for(a, template=0), a))
    return out


def generate(
    comps,
    prompts: list[str],
    n: int,
    folder: Path,
    steps: int,
    guidance: float,
    seed: int,
    sampler: str = "ddim",
    eta: float = 0.0,
) -> list:
    import tailor
    from tailor.core.io import write_json

    folder.mkdir(parents=True, exist_ok=True)
    pipe = tailor.Pipeline(comps)
    images, records = [], []
    for i in range(0, len(prompts), 16):
        chunk = prompts[i : i + 16]
        res = pipe.generate(chunk, n=n, seed=seed + i * n, steps=steps, guidance=guidance, sampler=sampler, eta=eta)
        for img, p, s in zip(res.images, res.prompts, res.seeds):
            name = f"{len(records):04d}.png"
            img.save(folder / name)
            records.append({"file": name, "prompt": p, "seed": s})
            images.append(img)
    settings = {"steps": steps, "guidance": guidance, "sampler": sampler, "eta": eta}
    write_json(folder / "generation.json", {"images": records, "settings": settings})
    return images


def real_renders(attrs: list[dict], n: int, seed: int) -> list:
    from tailor.world.objects import render_object
    from tailor.world.vocab import derive_seed

    keys = ("shape", "color", "pattern", "background", "style")
    return [
        render_object(derive_seed(seed, i, j), **{k: a[k] for k in keys}).pil()
        for i, a in enumerate(attrs)
        for j in range(n)
    ]


@torch.no_grad()
def vae_roundtrip(comps, images: list) -> list:
    """Real renders through the base's VAE (posterior mean, decoded): what a perfect latent generator could give."""
    from tailor.core.images import to_pil, to_tensor

    vae = comps.vae
    x = torch.stack([to_tensor(im) for im in images])
    out = []
    for i in range(0, len(x), 32):
        y = vae.decode(vae.encode(x[i : i + 32].to(vae.dtype)).latent_dist.mean).sample
        out += to_pil((y + 1) / 2)
    return out


def face_prompts(n: int, seed: int) -> list[tuple[str, dict]]:
    from tailor.world.captions import caption_for
    from tailor.world.identity import FACE_CLASSES
    from tailor.world.vocab import BACKGROUNDS, STYLES, make_rng

    rng = make_rng(seed)
    out = []
    for i in range(n):
        a = {
            "kind": "face",
            "cls": FACE_CLASSES[rng.integers(len(FACE_CLASSES))],
            "background": BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
            "style": list(STYLES)[i % len(STYLES)],
        }
        out.append((caption_for(a, template=0), a))
    return out


@torch.no_grad()
def face_scores(images: list, real: list, real2: list) -> dict:
    from tailor.eval.identity import face_embeddings
    from tailor.eval.world import frechet_distance
    from tailor.faces.models import keypoint_detector
    from tailor.world.zoo.oracles import to_unit

    detector = keypoint_detector()
    found = float((detector(to_unit(images))[1] > 0).float().mean())
    found_real = float((detector(to_unit(real))[1] > 0).float().mean())
    gen, ref, ref2 = face_embeddings(images), face_embeddings(real), face_embeddings(real2)
    return {
        "face_found": found,
        "face_found_real": found_real,
        "fid_like_face_oracle": frechet_distance(gen, ref),
        "fid_like_face_oracle_real_vs_real": frechet_distance(ref2, ref),
    }


def real_faces(attrs: list[dict], n: int, seed: int) -> list:
    from tailor.world.faces import render_face
    from tailor.world.vocab import derive_seed

    keys = ("cls", "background", "style")
    return [
        render_face(derive_seed(seed, i, j), **{k: a[k] for k in keys}).pil()
        for i, a in enumerate(attrs)
        for j in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="outputs/zoo_eval")
    ap.add_argument("--base", default="world")
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--holdout-prompts", type=int, default=8)
    ap.add_argument("--face-prompts", type=int, default=0, help="face prompts (every style), 0: none")
    ap.add_argument("-n", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--sampler", default="ddim", help="tailor's sampler names (tailor.core.samplers.SAMPLERS)")
    ap.add_argument("--eta", type=float, default=0.0, help="DDIM eta (1: as stochastic as DDPM)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import tailor
    from tailor.eval.world import frechet_distance, prompt_scores, world_scores

    out = Path(args.out)
    comps = tailor.load_components(args.base)
    scores: dict = {"base": args.base, "settings": vars(args)}
    sampling = (args.steps, args.guidance, args.seed, args.sampler, args.eta)
    for split, holdout, count in (("train", False, args.prompts), ("holdout", True, args.holdout_prompts)):
        pairs = photo_prompts(count, args.seed + holdout, holdout)
        prompts = [p for p, _ in pairs]
        t0 = time.time()
        imgs = generate(comps, prompts, args.n, out / split, *sampling)
        per_image = [p for p in prompts for _ in range(args.n)]
        s = world_scores(imgs, per_image)
        s["seconds"] = time.time() - t0
        real = real_renders([a for _, a in pairs], args.n, 777 + holdout)
        s["real_renders"] = world_scores(real, per_image)["accuracy"]
        s["real_renders_vae_roundtrip"] = world_scores(vae_roundtrip(comps, real), per_image)["accuracy"]
        try:
            from tailor.world.zoo.scorer import clip_image_embeds

            s.update(prompt_scores(imgs, per_image))
            s["fid_like_clip"] = frechet_distance(clip_image_embeds(imgs), clip_image_embeds(real))
            s["fid_like_real_vs_real"] = frechet_distance(
                clip_image_embeds(real), clip_image_embeds(real_renders([a for _, a in pairs], args.n, 999))
            )
        except Exception as e:  # noqa: BLE001 - the world CLIP may not be trained yet
            s["clip_error"] = str(e)
        scores[split] = s
        print(json.dumps({split: s}), flush=True)
    if args.face_prompts:
        pairs = face_prompts(args.face_prompts, args.seed + 2)
        prompts = [p for p, _ in pairs]
        per_image = [p for p in prompts for _ in range(args.n)]
        t0 = time.time()
        imgs = generate(comps, prompts, args.n, out / "faces", *sampling)
        s = world_scores(imgs, per_image)
        s["seconds"] = time.time() - t0
        real = real_faces([a for _, a in pairs], args.n, 777)
        s["real_renders"] = world_scores(real, per_image)["accuracy"]
        s.update(face_scores(imgs, real, real_faces([a for _, a in pairs], args.n, 999)))
        scores["faces"] = s
        print(json.dumps({"faces": s}), flush=True)
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    print(np.round(list(scores["train"]["accuracy"].values()), 3))


if __name__ == "__main__":
    main()
