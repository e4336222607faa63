"""The zoo's world PhotoVerse (Chen et al. 2023): the encoder pre-training on world faces, then the export.

Trains through the one trainer on ``world:faces:all:ids=1000-`` (identities 0-799 train the FaceSim oracle, 800-999
are held out for ``tailor bench identity``; no held-out identity is seen): each item's reference is another render
of its identity (:class:`tailor.methods.photoverse.data.ReferenceViews`) and its caption names the face ``S`` before
the class word. Sized for one busy CPU thread: batch 8, lr 3e-4 (adapters from scratch + rank-4 LoRAs; the paper's
schedule is far longer), AdamW weight decay 0.01, gradient clipping 1, constant rate after 50 warm-up steps. Face-ID
loss weight 0.1 instead of the paper's 0.01 (a few thousand steps, not tens of thousands). Checkpoints every 100
steps; a rerun resumes from the newest.

    python -m zoo.photoverse train RUNS [STEPS]   # -> RUNS/photoverse
    python -m zoo.photoverse export RUNS          # -> tailor/world/zoo/weights/adapters/photoverse (float16)
"""

from __future__ import annotations

import sys
from pathlib import Path

DATA = "world:faces:all:ids=1000-"
OPTIONS = {"face_loss": 0.1}
RECIPE = dict(steps=1500, batch_size=8, lr=3e-4, weight_decay=1e-2, warmup_steps=50)


def train(runs: str | Path, steps: int | None = None, base: str = "world"):
    import tailor
    from tailor.core.training import TrainConfig
    from tailor.core.training.checkpoint import list_checkpoints

    out = Path(runs) / "photoverse"
    r = dict(RECIPE, steps=steps or RECIPE["steps"])
    config = TrainConfig(base=base, out=str(out), data=DATA, lr_scheduler="constant", seed=0, checkpoint_every=100,
                         keep_checkpoints=2, resume="latest" if list_checkpoints(out) else None, log_every=10,
                         **r)  # fmt: skip
    return tailor.train(tailor.get_spec("photoverse").method(**OPTIONS), config)


def export(runs: str | Path, weights: str | Path | None = None) -> Path:
    """``RUNS/photoverse/photoverse.safetensors`` -> ``weights/adapters/photoverse/`` in float16 + ``tailor.json``."""
    import json

    from tailor.core.artifacts import resolve_artifact
    from tailor.core.io import atomic_dir, load_tensors, read_metadata, save_tensors, write_json
    from tailor.world.zoo import WEIGHTS

    src_dir = Path(runs) / "photoverse"
    src = resolve_artifact(src_dir)
    meta = read_metadata(src) | {"base": "world"}
    dst = Path(weights or WEIGHTS) / "adapters" / "photoverse"
    rows = [json.loads(x) for x in (src_dir / "log.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("it_s")]
    trained = {"steps": rows[-1]["step"], "loss_last_window": rows[-1].get("loss")} if rows else {}
    with atomic_dir(dst) as tmp:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_tensors(src).items()}
        save_tensors(tmp / src.name, tensors, meta)
        write_json(
            tmp / "tailor.json",
            {"artifact": src.name, "zoo": {"data": DATA, "options": OPTIONS, "recipe": RECIPE, "trained": trained}},
        )
    return dst


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    what, runs = sys.argv[1], sys.argv[2]
    print(export(runs) if what == "export" else train(runs, int(sys.argv[3]) if len(sys.argv) > 3 else None))
