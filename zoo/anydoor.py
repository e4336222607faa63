"""The zoo's world AnyDoor (Chen et al., CVPR 2024): trained on world object pairs, then exported in float16.

One run through the one trainer on ``world:pair:all`` (each item: a view of one object instance in one of the five
styles; :class:`tailor.methods.anydoor.data.AnyDoorPairs` makes it a pair: 70% of the objects from another scene of
the same instance, 30% the target's own). Sized for one busy CPU thread (~1.1 s/step at batch 8 on an idle core):
1,500 steps, lr 1e-4 (official 1e-5 over far more steps), AdamW weight decay 0.01, gradient clipping 1, constant rate
after 50 warm-up steps; the decoder as a rank-8 LoRA (the 5 MB budget: the ControlNet alone is ~3.9 MB in fp16).
Checkpoints every 250 steps, all kept (the ablations compare at equal steps); a rerun resumes from the newest.

    python -m zoo.anydoor train RUNS [VARIANT [STEPS]]   # -> RUNS/<variant>; variants: anydoor, nodetail, nocross
    python -m zoo.anydoor export RUNS                    # -> tailor/world/zoo/weights/adapters/anydoor (float16)
"""

from __future__ import annotations

import sys
from pathlib import Path

DATA = "world:pair:all"
STEPS, LR, BATCH = 1500, 1e-4, 8
VARIANTS = {
    "anydoor": {},
    "nodetail": {"detail": False},  # ablation: the box is cleared, no high-frequency map
    "nocross": {"cross_pose": 0.0},  # ablation: only still-image pairs (the target's own object)
}


def train(runs: str | Path, variant: str = "anydoor", steps: int | None = None, base: str = "world"):
    import tailor
    from tailor.core.training import TrainConfig
    from tailor.core.training.checkpoint import list_checkpoints

    out = Path(runs) / variant
    resume = "latest" if list_checkpoints(out) else None
    config = TrainConfig(base=base, out=str(out), data=DATA, steps=steps or STEPS, batch_size=BATCH, lr=LR,
                         weight_decay=1e-2, lr_scheduler="constant", warmup_steps=50, seed=0, checkpoint_every=250,
                         keep_checkpoints=0, resume=resume, log_every=10)  # fmt: skip
    return tailor.train(tailor.get_spec("anydoor").method(**VARIANTS[variant]), config)


def export(runs: str | Path, weights: str | Path | None = None) -> Path:
    """``RUNS/anydoor/anydoor.safetensors`` -> ``weights/adapters/anydoor/`` in float16 with its ``tailor.json``."""
    from tailor.core.artifacts import resolve_artifact
    from tailor.core.io import atomic_dir, load_tensors, read_metadata, save_tensors, write_json
    from tailor.world.zoo import WEIGHTS

    src = resolve_artifact(Path(runs) / "anydoor")
    meta = read_metadata(src) | {"base": "world"}
    dst = Path(weights or WEIGHTS) / "adapters" / "anydoor"
    recipe = {"data": DATA, "steps": STEPS, "lr": LR, "batch_size": BATCH, "options": VARIANTS["anydoor"]}
    with atomic_dir(dst) as tmp:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_tensors(src).items()}
        save_tensors(tmp / src.name, tensors, meta)
        write_json(tmp / "tailor.json", {"artifact": src.name, "zoo": {"recipe": recipe}})
    return dst


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    what, runs = sys.argv[1], sys.argv[2]
    if what == "export":
        print(export(runs))
    else:
        variant = sys.argv[3] if len(sys.argv) > 3 else "anydoor"
        print(train(runs, variant, int(sys.argv[4]) if len(sys.argv) > 4 else None))
