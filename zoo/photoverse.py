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
    python -m zoo.photoverse speed train          # trainable parameters, training s/step, peak RSS (one process)
    python -m zoo.photoverse speed sample plain|photoverse|tune   # sampling s/step and peak RSS (one process each)
    python -m zoo.photoverse sheet BENCH_OUT      # BENCH_OUT/photoverse_sheet.png from a `tailor bench identity` run
"""

from __future__ import annotations

import sys
from pathlib import Path

DATA = "world:faces:all:ids=1000-"
OPTIONS = {"face_loss": 0.1}
RECIPE = dict(steps=7200, batch_size=8, lr=3e-4, weight_decay=1e-2, warmup_steps=50)


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


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def speed(what: str, row: str = "photoverse", steps: int = 10, rounds: int = 3) -> dict:
    """``train``: trainable parameters and s/step of ``steps`` recipe steps (batch 8) on the world base; ``sample``:
    s/step of 20-step sampling (CFG 5, best of ``rounds``) with ``row`` (plain, photoverse, tune: + 20 test-time
    steps, their seconds apart); both with the process's peak RSS."""
    import tempfile
    import time

    import tailor
    import tailor.world as world
    from tailor.core.pipeline import Pipeline

    if what == "train":
        from tailor.core.training import TrainConfig

        method = tailor.get_spec("photoverse").method(**OPTIONS)
        with tempfile.TemporaryDirectory() as tmp:
            config = TrainConfig(base="world", out=tmp, data=DATA, steps=steps, batch_size=RECIPE["batch_size"],
                                 lr=RECIPE["lr"], seed=0, log_every=1)  # fmt: skip
            result = tailor.train(method, config)
            params = sum(p.numel() for p in method.trainable_parameters())
        return {"trainable_params": params, "train_s_per_step": result.seconds / result.steps,
                "peak_rss_mb": _peak_rss_mb()}  # fmt: skip
    comps = tailor.load_components("world")
    face = world.render_face(3, identity=901, size=comps.default_size).pil()
    best, adapt = float("inf"), 0.0
    for _ in range(rounds):
        pipe = Pipeline(comps)
        if row != "plain":
            method = tailor.load(str(_shipped()))
            if row == "tune":
                method.config = method.config.replace(tune_steps=20)
            pipe.attach(method, face=face, class_word="man")
        t = time.perf_counter()
        pipe.generate("a photo of a man on snow", n=1, seed=0, steps=20, guidance=5.0)
        sec = time.perf_counter() - t
        if row != "plain":
            adapt, sec = method.adapt_seconds, sec - method.adapt_seconds
        best = min(best, sec)
        pipe.detach()
    return {"row": row, "sample_s_per_step": best / 20, "tune_s": adapt, "peak_rss_mb": _peak_rss_mb()}


SHEET_KEYS = ("base", "instantid", "photomaker", "photoverse", "photoverse-tune")


def sheet(bench_out: str | Path, identities: int = 4, prompts: int = 2, scale: int = 2) -> Path:
    """Columns: the first reference | each row's first-seed image; one line per (identity, prompt) of the run."""
    import json

    from PIL import Image

    from tailor.bench import identity as B

    root = Path(bench_out)
    settings = json.loads((root / "tailor-bench.json").read_text())
    ids, seeds = settings["identities"][:identities], int(settings["seeds"])
    keys = [k for k in SHEET_KEYS if (root / "images" / k).is_dir()]
    lines = []
    for ident in ids:
        ref = B.references(int(ident), 1, 64)[0]
        for k in range(prompts):
            tiles = [ref] + [
                Image.open(root / "images" / key / str(ident) / f"img_{k * seeds:03d}.png") for key in keys
            ]
            lines.append(tiles)
    size, pad = 64 * scale, 2
    out = Image.new("RGB", ((size + pad) * (1 + len(keys)), (size + pad) * len(lines)), "white")
    for r, tiles in enumerate(lines):
        for c, tile in enumerate(tiles):
            out.paste(tile.convert("RGB").resize((size, size), Image.NEAREST), (c * (size + pad), r * (size + pad)))
    path = root / "photoverse_sheet.png"
    out.save(path)
    (root / "photoverse_sheet.json").write_text(json.dumps({"columns": ["reference", *keys], "identities": ids,
                                                            "prompts_per_identity": prompts}))  # fmt: skip
    return path


def _shipped() -> Path:
    from tailor.world.zoo import WEIGHTS

    return WEIGHTS / "adapters" / "photoverse"


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    what, arg = sys.argv[1], sys.argv[2]
    if what == "speed":
        print(speed(arg, *sys.argv[3:4]))
    elif what == "sheet":
        print(sheet(arg))
    else:
        print(export(arg) if what == "export" else train(arg, int(sys.argv[3]) if len(sys.argv) > 3 else None))
