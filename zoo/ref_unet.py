"""The zoo's world ref_unet (IDM-VTON, Choi et al. 2024): the try-on UNet trained on world try-on cases, its
ablation without the reference UNet (inpainting + IP-Adapter only) trained the same way, the export and the bench.

Both runs: ``world:pair`` sized data (each item re-rendered by :class:`tailor.methods.ref_unet.data.TryOnItems`),
batch 4, lr 2e-4 (conv_in at 10x), AdamW weight decay 0.01, constant after 20 warm-up steps, 1,600 steps (the shipped
run: 800, then resumed to 1,600), seed 0, LoRA rank 16 on attention / proj / ff of the try-on UNet, IP-Adapter-Plus
``world-plus`` frozen. Checkpoints every 100 steps; a rerun resumes from the newest. ~2-3 s/step under the shared load
(two runs at once), 0.85 s/step for the resumed 800 (load ~1).

    python -m zoo.ref_unet train RUNS ref        # -> RUNS/ref      (the method)
    python -m zoo.ref_unet train RUNS baseline   # -> RUNS/baseline (reference_unet=False)
    python -m zoo.ref_unet export RUNS           # -> tailor/world/zoo/weights/adapters/ref-unet (float16)
    python -m zoo.ref_unet bench RUNS/ref RUNS/baseline OUT [N]   # SSIM / PSNR vs the exact targets + contact sheet
    python -m zoo.ref_unet speed ref|baseline    # trainable params, train s/step, peak RSS, sampling s/step vs base
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

DATA = "world:pair"
STEPS = 1600
RUNS = {"ref": {"reference_unet": True}, "baseline": {"reference_unet": False}}
BENCH_SEED = 900_000  # bench cases: derive_seed(BENCH_SEED, i), disjoint from the training seed 0
GUIDANCE, SAMPLING_STEPS = 2.0, 30  # the official inference default guidance (2.0)


def train(runs: str | Path, which: str, steps: int | None = None, base: str = "world"):
    import tailor
    from tailor.core.training import TrainConfig
    from tailor.core.training.checkpoint import list_checkpoints

    out = Path(runs) / which
    resume = "latest" if list_checkpoints(out) else None
    config = TrainConfig(base=base, out=str(out), data=DATA, steps=steps or STEPS, batch_size=4, lr=2e-4,
                         weight_decay=1e-2, lr_scheduler="constant", warmup_steps=20, seed=0, checkpoint_every=100,
                         keep_checkpoints=2, resume=resume, log_every=20)  # fmt: skip
    return tailor.train(tailor.get_spec("ref_unet").method(**RUNS[which]), config)


def export(runs: str | Path, weights: str | Path | None = None) -> Path:
    """``RUNS/ref/ref_unet.safetensors`` -> ``weights/adapters/ref-unet/`` in float16 with its ``tailor.json``."""
    from tailor.core.artifacts import resolve_artifact
    from tailor.core.io import atomic_dir, load_tensors, read_metadata, save_tensors, write_json
    from tailor.world.zoo import WEIGHTS

    src = resolve_artifact(Path(runs) / "ref")
    meta = read_metadata(src) | {"base": "world"}
    dst = Path(weights or WEIGHTS) / "adapters" / "ref-unet"
    log = [json.loads(line) for line in (Path(runs) / "ref" / "log.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in log if "loss" in r][-10:]
    with atomic_dir(dst) as tmp:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_tensors(src).items()}
        save_tensors(tmp / src.name, tensors, meta)
        recipe = {"data": DATA, "steps": STEPS, "batch_size": 4, "lr": 2e-4, "method": "ref_unet",
                  "options": RUNS["ref"], "warmup_steps": 20, "weight_decay": 0.01}  # fmt: skip
        trained = {"loss_last_window": sum(losses) / max(len(losses), 1)}
        write_json(tmp / "tailor.json", {"artifact": src.name, "zoo": {"base": "world", "recipe": recipe,
                                                                          "trained": trained}})  # fmt: skip
    return dst


def bench(ref: str, baseline: str, out: str | Path, n: int = 32, base: str = "world") -> dict:
    """Both models on ``n`` held-out try-on cases (same seeds, 30 DDIM steps, guidance 2): SSIM / PSNR of the whole
    image and of the masked region against the exact target; ``OUT/ref_unet_bench.json`` and a contact sheet
    ``OUT/ref_unet_sheet.png`` (scene with the mask darkened | reference | target | ref_unet | baseline)."""
    import numpy as np
    from PIL import Image

    import tailor
    from tailor.core.pipeline import Pipeline
    from tailor.eval.image_metrics import psnr, ssim
    from tailor.methods.ref_unet.data import render_tryon
    from tailor.world.vocab import derive_seed

    comps = tailor.load_components(base)
    cases = [render_tryon(derive_seed(BENCH_SEED, i), comps.default_size) for i in range(n)]
    results, images = {}, {}
    for name, path in (("ref_unet", ref), ("baseline", baseline)):
        method = tailor.load(path)
        rows, outs, t0 = [], [], time.time()
        for i, c in enumerate(cases):
            inputs = {k: Image.fromarray(c[k]) for k in ("scene", "reference", "mask", "shape")}
            pipe = Pipeline(comps).attach(method, **inputs)
            img = np.asarray(pipe.generate(c["caption"], seed=i, steps=SAMPLING_STEPS, guidance=GUIDANCE).images[0])
            pipe.detach()
            ys, xs = np.nonzero(c["mask"] >= 128)  # the mask is a box: its crop is the repainted region
            crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            a, b = img[crop], c["target"][crop]
            rows.append({"ssim": ssim(img, c["target"]), "psnr": psnr(img, c["target"]),
                         "ssim_mask": ssim(a, b), "psnr_mask": psnr(a, b)})  # fmt: skip
            outs.append(img)
        results[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        results[name]["seconds"] = round(time.time() - t0, 1)
        images[name] = outs
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ref_unet_bench.json").write_text(json.dumps({"n": n, "guidance": GUIDANCE, "steps": SAMPLING_STEPS,
                                                         "results": results}, indent=2))  # fmt: skip
    np.savez_compressed(out / "ref_unet_bench_images.npz", **{k: np.stack(v) for k, v in images.items()})
    sheet = []
    for i, c in enumerate(cases[:8]):
        m = np.repeat(c["mask"][..., None], 3, -1) >= 128
        shown = np.where(m, c["scene"] // 3 + 60, c["scene"]).astype(np.uint8)  # the masked region greyed
        sheet.append(np.concatenate([shown, c["reference"], c["target"], images["ref_unet"][i],
                                     images["baseline"][i]], 1))  # fmt: skip
    arr = np.concatenate(sheet, 0).astype(np.uint8)
    Image.fromarray(arr).resize((arr.shape[1] * 3, arr.shape[0] * 3), Image.NEAREST).save(out / "ref_unet_sheet.png")
    return results


def speed(which: str, steps: int = 12, base: str = "world") -> dict:
    """Trainable parameters, training s/step (batch 4, the recipe's; after 2 warm-up steps) and this process's peak
    RSS for ``which`` (``ref`` / ``baseline``), and sampling s/step (30 steps, guidance 2) of it and of the plain base
    in the same process; run once per ``which`` (peak RSS is per process)."""
    import resource
    import tempfile

    import numpy as np
    from PIL import Image

    import tailor
    from tailor.core.pipeline import Pipeline
    from tailor.core.training import TrainConfig
    from tailor.methods.ref_unet.data import render_tryon

    method = tailor.get_spec("ref_unet").method(**RUNS[which])
    with tempfile.TemporaryDirectory() as tmp:
        times: list[float] = []
        config = TrainConfig(base=base, out=tmp, data=DATA, steps=steps, batch_size=4, lr=2e-4, seed=0, log_every=1,
                             checkpoint_every=10_000)  # fmt: skip
        t0 = time.time()
        tailor.train(method, config)
        total = time.time() - t0
        log = [json.loads(x) for x in (Path(tmp) / "log.jsonl").read_text().splitlines() if x.strip()]
        times = [1.0 / r["it_s"] for r in log[2:] if r.get("it_s")]
    trainable = sum(p.numel() for p in method.trainable_parameters())
    method.unpatch()  # off the training base
    rss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    comps = tailor.load_components(base)
    c = render_tryon(derive_seed_for_speed(), comps.default_size)
    inputs = {k: Image.fromarray(c[k]) for k in ("scene", "reference", "mask", "shape")}
    out = {"which": which, "trainable_params": trainable, "train_s_per_step": float(np.median(times)) if times else
           total / steps, "peak_rss_mb_after_training": round(rss_train)}  # fmt: skip
    for name in ("plain", which):
        pipe = Pipeline(comps)
        if name != "plain":
            pipe.attach(method, **inputs)
        pipe.generate(c["caption"], steps=2, guidance=GUIDANCE)  # warm-up
        runs = []
        for s in range(3):
            t0 = time.time()
            pipe.generate(c["caption"], seed=s, steps=SAMPLING_STEPS, guidance=GUIDANCE)
            runs.append((time.time() - t0) / SAMPLING_STEPS)
        out[f"sample_s_per_step_{name}"] = float(np.median(runs))
        pipe.detach()
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def derive_seed_for_speed() -> int:
    from tailor.world.vocab import derive_seed

    return derive_seed(BENCH_SEED, 0)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    what = sys.argv[1]
    if what == "train":
        print(train(sys.argv[2], sys.argv[3]))
    elif what == "speed":
        print(json.dumps(speed(sys.argv[2])))
    elif what == "export":
        print(export(sys.argv[2]))
    elif what == "bench":
        print(json.dumps(bench(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 32),
                         indent=2))  # fmt: skip
