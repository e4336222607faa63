"""``tailor synth``: real renders of one domain -> box statistics -> layouts -> images -> filter -> COCO folder.

Candidate ``i`` (``0 <= i < n``) is a pure function of ``(seed, i)``: its layout is drawn from
``make_rng(seed, i, 24)`` and its image generated with seed ``derive_seed(seed, i)`` alone (batch of one), so it does
not depend on which process makes it or in what order. Under ``accelerate launch`` (or torchrun) process ``r`` of
``w`` makes the candidates ``i % w == r``; after a barrier the main process merges the per-candidate records in index
order into ``annotations.json``, so the merged folder is byte-identical to a one-process run's.

Output folder: ``images/NNNNNN.png`` (kept candidates), ``dropped/NNNNNN.png`` (the others, to look at),
``records/NNNNNN.json`` (every candidate: seed, caption,
boxes, the filter's per-box scores, kept or not; written last, atomically, so a record means "done"),
``annotations.json`` (COCO, kept images), ``stats.json`` (the fitted statistics), ``filter.safetensors`` (the
foreground classifier), ``tailor.json`` (the settings; a resumed run must give the same ones) and ``summary.json``.
Resuming skips every candidate that has a record.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from tailor.core.training.distributed import barrier, process_slot
from tailor.errors import ConfigError, InputError
from tailor.synth.methods import get_synth_method
from tailor.synth.stats import BoxStats, Layout, fit_stats

RECORDS, IMAGES, DROPPED, FILTER = "records", "images", "dropped", "filter.safetensors"
PREVIEW = 32  # candidates drawn in preview.png


def layout_at(stats: BoxStats, seed: int, i: int) -> tuple[Layout, int]:
    from tailor.world.vocab import derive_seed, make_rng

    return stats.sample(make_rng(seed, i, 24)), int(derive_seed(seed, i)) % (2**31)


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """A folder with an earlier run continues only with the same settings (else its images would mix)."""
    record = out / "tailor.json"
    if record.is_file():
        old = json.loads(record.read_text()).get("settings")
        if old != settings:
            diff = sorted(k for k in {**old, **settings} if (old or {}).get(k) != settings.get(k))
            raise ConfigError(
                f"--out {out} holds a synth run with other settings ({', '.join(diff)}); pass the same ones to "
                f"resume it or pick a new folder."
            )


def synthesize(method: str, real: str | Path, n: int, out: str | Path, seed: int = 0, threshold: float = 0.5,
               filter_steps: int = 300, log=print, **options: Any) -> dict[str, Any] | None:  # fmt: skip
    """Run this process's share; the main process merges and returns the summary (others return None)."""
    from PIL import Image

    from tailor.core.io import atomic_path, write_json
    from tailor.methods.odgen.finetune import FINETUNE_DIR, check_steps, finetune
    from tailor.synth.filter import box_scores, load_classifier, save_classifier, train_classifier

    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}.")
    if not 0 <= threshold < 1:
        raise ConfigError(f"--threshold must lie in [0, 1); got {threshold}.")
    rank, world = process_slot()
    lora, finetune_steps = options.get("lora"), options.get("finetune")
    if finetune_steps is not None:
        check_steps(finetune_steps)
        if lora is not None:
            raise ConfigError("pass --finetune (train a LoRA on --real) or --lora (a trained one), not both.")
    scope = options.get("finetune_scope")
    if scope is not None:
        if scope not in ("all", "objects"):
            raise ConfigError(f"--finetune-scope must be all or objects; got {scope!r}.")
        if method != "odgen" or (lora is None and finetune_steps is None):
            raise ConfigError("--finetune-scope applies to --method odgen with --finetune or --lora; drop it.")
    synth = get_synth_method(method)(**options)
    stats = fit_stats(real)
    settings = {**synth.settings(), "real": str(Path(real).resolve()), "n": n, "seed": seed, "threshold": threshold,
                "filter_steps": filter_steps}  # fmt: skip
    out = Path(out)
    synth.setup()
    synth.check(stats)
    if lora is not None:  # before anything is written: a bad file is refused with the folder untouched
        synth.fine_tune(lora)
    if rank == 0:
        _check_settings(out, settings)
        write_json(out / "tailor.json", {"command": "tailor synth", "settings": settings})
        write_json(out / "stats.json", stats.to_dict())
    if finetune_steps is not None:  # ODGEN's first stage: a LoRA on --real's scenes and crops (resumable)
        if rank == 0:
            finetune(real, out / FINETUNE_DIR, finetune_steps, base=synth.base, seed=seed)
        barrier(world)
        synth.fine_tune(out / FINETUNE_DIR)
    classifier = None
    if threshold > 0:
        if (out / FILTER).is_file():
            classifier = load_classifier(out / FILTER)
        else:  # every process trains the same classifier (deterministic); the main one saves it
            classifier = train_classifier(*_real_set(real), list(stats.classes), seed=seed, steps=filter_steps)
            if rank == 0:
                save_classifier(classifier, out / FILTER)
    todo = [i for i in range(rank, n, world) if not (out / RECORDS / f"{i:06d}.json").is_file()]
    log(f"process {rank}/{world}: {len(todo)} of {len(range(rank, n, world))} candidates to make")
    t0 = time.perf_counter()
    for k, i in enumerate(todo):
        layout, image_seed = layout_at(stats, seed, i)
        image = synth.generate(layout, image_seed)
        scores = box_scores(classifier, image, layout.objects) if classifier is not None else []
        kept = all(s >= threshold for s in scores)
        name = f"{IMAGES if kept else DROPPED}/{i:06d}.png"
        with atomic_path(out / name) as tmp:  # dropped images are kept aside, to look at
            Image.fromarray(image).save(tmp, format="PNG")
        rec = {"index": i, "seed": image_seed, "caption": layout.caption, "background": layout.background,
               "style": layout.style, "size": layout.size, "objects": layout.objects,
               "scores": [round(s, 6) for s in scores],
               "passed": [s >= threshold for s in scores], "kept": kept, "file": name}  # fmt: skip
        write_json(out / RECORDS / f"{i:06d}.json", rec)
        if (k + 1) % 10 == 0 or k + 1 == len(todo):
            log(f"process {rank}: {k + 1}/{len(todo)} ({(time.perf_counter() - t0) / (k + 1):.1f} s each)")
    barrier(world)
    if rank != 0:
        return None
    return merge(out, n, list(stats.classes))


def _real_set(real: str | Path) -> tuple[list[np.ndarray], list[list[dict]]]:
    from PIL import Image

    from tailor.detect.coco import read_world_labels, world_objects

    real = Path(real)
    records = read_world_labels(real)
    images = [np.asarray(Image.open(real / r["file"]).convert("RGB")) for r in records]
    return images, [world_objects(r) for r in records]


def merge(out: Path, n: int, classes: list[str]) -> dict[str, Any]:
    """``annotations.json`` (COCO, kept candidates in index order) and ``summary.json`` from the records."""
    from tailor.core.io import write_json
    from tailor.detect.coco import write_coco

    recs = []
    for i in range(n):
        path = out / RECORDS / f"{i:06d}.json"
        if not path.is_file():
            raise InputError(f"{path} is missing: a process stopped early; run the same command again to finish.")
        recs.append(json.loads(path.read_text()))
    kept = [r for r in recs if r["kept"]]
    images = [{"id": r["index"], "file_name": r["file"], "width": r["size"], "height": r["size"]} for r in kept]
    objects = [[{"box": o["box"], "class": o["class"]} for o in r["objects"]] for r in kept]
    write_coco(out / "annotations.json", images, objects, classes)
    summary = {"candidates": n, "kept": len(kept), "dropped": n - len(kept),
               "objects": sum(len(o) for o in objects)}  # fmt: skip
    write_json(out / "summary.json", summary)
    write_preview(out, recs[:PREVIEW])
    return summary


def write_preview(out: Path, recs: list[dict[str, Any]], scale: int = 3) -> None:
    """``preview.png``: the first candidates 3x enlarged with their boxes (green: the filter passed the box, red:
    it failed; a dropped image has at least one red box) and each box's class initial."""
    from PIL import Image, ImageDraw

    from tailor.core.images import make_grid
    from tailor.core.io import atomic_path

    tiles = []
    for r in recs:
        with Image.open(out / r["file"]) as im:
            tile = im.convert("RGB").resize((r["size"] * scale,) * 2, Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        passed = r["passed"] or [True] * len(r["objects"])
        for o, ok in zip(r["objects"], passed):
            x0, y0, x1, y1 = (v * scale for v in o["box"])
            color = (40, 220, 40) if ok else (230, 30, 30)
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=2)
            draw.text((x0 + 3, y0 + 1), o["class"][:2], fill=color)
        tiles.append(tile)
    if tiles:
        with atomic_path(out / "preview.png") as tmp:
            make_grid(tiles, cols=8).save(tmp, format="PNG")
