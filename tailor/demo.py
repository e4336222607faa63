"""``make demo``: the main job on the built-in world, end to end on a CPU in a few minutes.

1. render a sample grid of the procedural world (objects in every style, subjects, faces, scenes, and world v2's
   relit pair, sign, two-object relation scene and story strip);
2. fine-tune a base for a few steps on world images (the shipped world model when it exists, else a tiny random
   SD-architecture base) and write its loss curve and validation grid;
3. generate before/after grids for the same prompts and seeds, and score them against real renders (SSIM /
   edge F1 — controllability metrics that need no trained evaluator);
4. personalize (issue #4): DreamBooth-LoRA (Ruiz et al. 2022 with LoRA, prior preservation, LoRA in the text encoder
   too: the paper's SD setting and the personalize bench's best row on the shipped base) learns one built-in
   world subject from 6 reference renders in a short run (the recipe of ``tailor bench personalize``), then writes
   before/after grids of ``a photo of a [V] [class] on snow`` and the before/after subject scores (DINO-like,
   CLIP-I-like, subject-attribute accuracy from the world oracles) into ``summary.json``.

Everything lands under ``--out`` (default ``outputs/demo``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def world_grid(out: Path) -> Path:
    from tailor.core.images import make_grid
    from tailor.world import STYLES, render_face, render_object, render_scene, render_subject, subjects

    tiles = [render_object(i, style=s).image for s in STYLES for i in range(4)]
    specs = list(subjects().values())
    tiles += [render_subject(specs[i % len(specs)], i).image for i in range(8)]
    tiles += [render_face(i, identity=i % 4).image for i in range(8)]
    tiles += [render_scene(i).image for i in range(8)]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % 8) + world_v2_row()  # v2 on a row of its own
    path = out / "world_grid.png"
    make_grid(tiles, cols=8).resize((8 * 66 * 2, ((len(tiles) + 7) // 8) * 66 * 2), 0).save(path)
    return path


def world_v2_row() -> list:
    """World v2's ground truth in one row of 8: a relit pair (same scene, two lights), a sign with a word, a
    two-object scene with a stated relation, a 4-frame story strip of one subject."""
    from tailor.world.kinds import kinds

    k = kinds()
    lit = "a photo of a red star on grass, lit from the {} by {} light"
    row = [k["light"].render(3, prompt=lit.format(*side))[0].image for side in (("left", "warm"), ("right", "blue"))]
    row.append(k["glyph"].render(2, prompt='a sign that says "CAT" on brick')[0].image)
    row.append(k["relation"].render(1, prompt="a red star left of a blue circle on grass")[0].image)
    row += [frame.image for frame in k["story"].render(0, frames=4, style="photo")]
    return row


def personalize(base: str, subject: str, steps: int | None, out: Path, key: str = "dreambooth_lora_te") -> dict:
    """DreamBooth-LoRA on one subject (the personalize bench's recipe and cache), before/after grids and scores."""
    import tailor
    from tailor.bench import common as C
    from tailor.bench import personalize as P
    from tailor.core.images import make_grid
    from tailor.eval.world import subject_scores, world_scores

    s = P.Settings(base=base, subjects=(subject,), steps=steps, class_images=8)
    print(f"[4/4] personalize: {key} on subject {subject} ({steps or P.RECIPES[key].steps} steps)")
    rec = P.train_subject(key, subject, s, out / "personalize")
    cls = C.class_word(subject)
    prompt = f"a photo of a {P.subject_words(key, rec['word'], cls)} on snow"
    refs = C.reference_images(subject, s.n_ref, tailor.load_components(base).default_size)
    pipe = tailor.Pipeline(tailor.load_components(base))
    gen = dict(n=4, steps=20, guidance=5.0)
    before = C.generate(pipe, [prompt], **gen)
    pipe.attach(tailor.load(P.artifact_path(out / "personalize", key, subject)))
    after = C.generate(pipe, [prompt], **gen)
    report = {"method": key, "subject": subject, "prompt": prompt, "train_steps": rec["steps"],
              "train_seconds": rec["seconds"]}  # fmt: skip
    for name, images in (("before", before), ("after", after)):
        make_grid(refs[:4] + images, cols=4).resize((4 * 128, 2 * 128), 0).save(out / f"personalize_{name}.png")
        sub = subject_scores(images, refs)
        report[name] = {
            "dino_like": round(sub["dino_like"], 4),
            "clip_i_like": round(sub["clip_i_like"], 4),
            "subject_attribute_accuracy": sub["subject_attribute_accuracy"],
            "background_snow": world_scores(images, [f"a photo of a {cls} on snow"] * len(images))["accuracy"][
                "background"
            ],
        }
    return report


def main(argv: list[str] | None = None) -> int:
    import tailor
    from tailor.core.images import make_grid
    from tailor.core.progress import quiet_libraries
    from tailor.core.training import TrainConfig, train
    from tailor.eval.image_metrics import canny, edge_f1, ssim
    from tailor.world import render

    quiet_libraries()  # no diffusers / transformers loading bars (TAILOR_VERBOSE=1 shows them)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/demo")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--base", default=None, help="base model (default: the shipped world base, else tiny)")
    ap.add_argument("--subject", default="checker_star", help="built-in world subject to personalize")
    ap.add_argument("--personalize-steps", type=int, default=None, help="DreamBooth-LoRA steps (default: recipe)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    print(f"[1/4] world sample grid -> {world_grid(out)}")

    base, resolution = args.base, None
    if base is None:
        try:
            from tailor.world.zoo import base_path

            base_path()
            base = "world"
        except Exception:  # the zoo is not shipped yet: a tiny random base of the same architecture
            base = "tiny"
    if base == "tiny":
        resolution = 32
    prompts = ["a photo of a red star on grass", "a sketch of a blue striped circle on sand"]
    cfg = TrainConfig(
        base=base,
        data="world:objects",
        resolution=resolution,
        steps=args.steps,
        batch_size=4,
        lr=1e-4,
        out=str(out / "train"),
        val_every=args.steps,
        val_prompts=prompts,
        val_steps=10,
    )
    method = tailor.get_spec("finetune").method()
    print(f"[2/4] fine-tune base={base} for {args.steps} steps -> {cfg.out}")
    result = train(method, cfg)

    print("[3/4] before/after grids")
    gen = dict(n=4, seed=0, steps=20, guidance=5.0)
    before = tailor.Pipeline(tailor.load_components(base)).generate(prompts, **gen)
    pipe = tailor.Pipeline(tailor.load_components(base)).attach(tailor.load(result.out))
    after = pipe.generate(prompts, **gen)
    make_grid(before.images + after.images, cols=8).save(out / "before_after.png")
    real = [np.asarray(render(p, seed=s, size=before.images[0].width).image) for p in prompts for s in range(4)]
    scores = {}
    for name, res in (("before", before), ("after", after)):
        imgs = [np.asarray(im) for im in res.images]
        scores[name] = {
            "ssim_to_real": float(np.mean([ssim(a, b) for a, b in zip(imgs, real)])),
            "edge_f1_to_real": float(np.mean([edge_f1(canny(a), canny(b)) for a, b in zip(imgs, real)])),
        }
    personalized = personalize(base, args.subject, args.personalize_steps, out)
    summary = {
        "base": base,
        "steps": args.steps,
        "final_loss": result.loss,
        "scores": scores,
        "personalize": personalized,
        "seconds": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"done: see {out}/world_grid.png, {out}/before_after.png, {out}/train/loss.png, {out}/train/samples/,")
    print(f"      {out}/personalize_before.png, {out}/personalize_after.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
