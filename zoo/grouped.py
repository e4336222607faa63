"""What the world recipes of ControlNet-plus-modules methods share (:mod:`zoo.controlgpt`, :mod:`zoo.odgen`; the
method side is :class:`tailor.core.control_groups.GroupedControlMethod`): the training run on the relation scenes
(resumable, checkpoints every 100 steps) and the float16 export of its artifact into the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def train(method, out: str | Path, data: str, steps: int, batch: int, lr: float):
    """``tailor.train`` of ``method`` on the world base: AdamW ``lr`` constant after 50 warm-up steps, seed 0,
    resumed from the latest checkpoint in ``out`` if any."""
    import tailor
    from tailor.core.training import TrainConfig
    from tailor.core.training.checkpoint import list_checkpoints

    cfg = TrainConfig(base="world", out=str(out), data=data, steps=steps, batch_size=batch, lr=lr,
                      lr_scheduler="constant", warmup_steps=50, seed=0, checkpoint_every=100, keep_checkpoints=2,
                      resume="latest" if list_checkpoints(out) else None, log_every=10)  # fmt: skip
    return tailor.train(method, cfg)


def export(src: str | Path, dst: Path, file: str, info: dict[str, Any], config: dict[str, Any]) -> Path:
    """The run ``src``'s artifact as float16 ``dst/file`` (metadata: the run's, ``base`` world, the config updated
    with ``config``) and ``dst/tailor.json`` (``zoo``: ``info`` + the run's steps, seconds and last loss)."""
    from tailor.core.artifacts import resolve_artifact
    from tailor.core.io import atomic_dir, load_tensors, read_metadata, save_tensors, write_json

    src = Path(src)
    artifact = resolve_artifact(src)
    meta = read_metadata(artifact) | {"base": "world"}
    meta["config"] = json.dumps(json.loads(meta["config"]) | config)
    trained = json.loads((src / "tailor.json").read_text()) if (src / "tailor.json").is_file() else {}
    with atomic_dir(dst) as tmp:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_tensors(artifact).items()}
        save_tensors(tmp / file, tensors, meta)
        keys = ("steps", "train_seconds", "loss_last_window")
        zoo = info | {"trained": {k: trained.get(k) for k in keys}}
        write_json(tmp / "tailor.json", {"artifact": file, "zoo": zoo})
    return dst
