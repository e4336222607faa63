"""The zoo's world ELITE (Wei et al., ICCV 2023): the two training stages on world object pairs, then the export.

Both stages train through the one trainer on ``world:pair:all`` (each item: a view of one object instance in one of
the five styles; :class:`tailor.methods.elite.data.PairViews` adds another view of the same instance, a photo in
another scene, as the reference, and names the subject ``S`` in the caption). Sized for one busy CPU thread
(~1 s/step at batch 8 under load 10 on the 2-core agent machine; 0.23 s/step on an idle one): global 2,400 steps, local
2,400 steps (1,200 until session 19: twice as long keeps the global mapper's DINO-like, docs/elite.md), lr 2e-4 /
3e-4 (the official effective rates are 6.4e-5 / 3.2e-4 over 10^5 steps; a few thousand steps need more), AdamW
weight decay 0.01 and gradient clipping 1 (official), constant rate after 50 warm-up steps, mapper width 128 (the
world CLIP's width; official 1024 for ViT-L/14), the local attention gated by the placeholder's map above its mean
(``gate="mean"``; the official m / max m opens the whole frame on this base's flat 4x4 / 8x8 maps, docs/elite.md).
Checkpoints every 100 steps; a rerun resumes from the newest. The shipped local stage was retrained on the shipped
global mapper (``RUNS/global`` = a copy of the shipped ``elite.safetensors``; only its ``global_mapper.*`` is read).

    python -m zoo.elite global RUNS      # -> RUNS/global
    python -m zoo.elite local RUNS       # -> RUNS/elite (global + local mappers); ``RUNS STEPS``: only STEPS steps
    python -m zoo.elite export RUNS      # -> tailor/world/zoo/weights/adapters/elite (float16)
"""

from __future__ import annotations

import sys
from pathlib import Path

DATA = "world:pair:all"
OPTIONS = {"mapper_width": 128, "gate": "mean"}  # gate: the local attention only where S stands out (docs)
STAGES = {
    "global": dict(steps=2400, lr=2e-4, out="global"),
    "local": dict(steps=2400, lr=3e-4, out="elite"),
}


def train_stage(runs: str | Path, stage: str, steps: int | None = None, base: str = "world"):
    import tailor
    from tailor.core.training import TrainConfig
    from tailor.core.training.checkpoint import list_checkpoints

    r = STAGES[stage]
    out = Path(runs) / r["out"]
    options = dict(OPTIONS, stage=stage)
    if stage == "local":
        options["global_mapper"] = str(Path(runs) / STAGES["global"]["out"])
    resume = "latest" if list_checkpoints(out) else None
    config = TrainConfig(base=base, out=str(out), data=DATA, steps=steps or r["steps"], batch_size=8, lr=r["lr"],
                         weight_decay=1e-2, lr_scheduler="constant", warmup_steps=50, seed=0, checkpoint_every=100,
                         keep_checkpoints=2, resume=resume, log_every=20)  # fmt: skip
    return tailor.train(tailor.get_spec("elite").method(**options), config)


def export(runs: str | Path, weights: str | Path | None = None) -> Path:
    """``RUNS/elite/elite.safetensors`` -> ``weights/adapters/elite/`` in float16 with its ``tailor.json``."""
    from tailor.core.artifacts import resolve_artifact
    from tailor.core.io import atomic_dir, load_tensors, read_metadata, save_tensors, write_json
    from tailor.world.zoo import WEIGHTS

    src = resolve_artifact(Path(runs) / STAGES["local"]["out"])
    meta = read_metadata(src) | {"base": "world"}
    dst = Path(weights or WEIGHTS) / "adapters" / "elite"
    with atomic_dir(dst) as tmp:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_tensors(src).items()}
        save_tensors(tmp / src.name, tensors, meta)
        write_json(tmp / "tailor.json", {"artifact": src.name, "zoo": {"data": DATA, "stages": STAGES}})
    return dst


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    what, runs = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else None  # fewer steps: a timing run (docs/elite.md)
    print(export(runs) if what == "export" else train_stage(runs, what, steps))
