"""Prompt by prompt, split over processes, resumable: how ``tailor generate`` makes a run of several prompts.

Prompt ``k`` gives images ``k*n .. k*n+n-1`` with seeds ``seed + k*n + j`` (the file names and seeds one call over
all the prompts gives), made by a ``Pipeline.generate`` call of its own, so an image does not depend on which process
makes it or in what order, and a long prompt file never becomes one huge batch. Under ``accelerate launch`` (or
``torchrun``) process ``r`` of ``w`` makes the prompts ``k % w == r``. A prompt's images are followed by
``generation.parts/NNNNNN.json`` (written last, atomically: the prompt is done); after a barrier the main process
writes ``grid.png`` and ``generation.json`` from the parts in prompt order and removes them, so the folder equals a
one-process run's byte for byte. A rerun into a folder whose run was stopped skips every prompt whose part records the
same prompt and settings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from tailor.core.training.distributed import barrier, process_slot

#: a folder of tailor's records (core.fsguard.TAILOR_RECORDS), so the folder of a stopped run is taken up again
PARTS = "generation.parts"


def _done(out: Path, k: int, prompt: str, settings: dict[str, Any]) -> bool:
    part = out / PARTS / f"{k:06d}.json"
    try:
        record = json.loads(part.read_text())
    except (OSError, ValueError):
        return False
    files = [out / r["file"] for r in record.get("images", [])]
    return record.get("prompt") == prompt and record.get("settings") == settings and all(f.is_file() for f in files)


def generate_prompts(pipe, texts: list[str], config, out: Path) -> None:
    """This process's share of the prompts into ``out``; the main process then merges (see the module's note)."""
    from tailor.cli.generate_outputs import write_outputs
    from tailor.core.io import atomic_path, write_json
    from tailor.core.pipeline import GenerationResult

    rank, world = process_slot()
    n = config.n
    settings = json.loads(json.dumps(pipe.settings_record(config), default=str))  # as the parts store it
    mine = [k for k in range(rank, len(texts), world)]
    todo = [k for k in mine if not _done(out, k, texts[k], settings)]
    if world > 1 or len(todo) < len(mine):
        click.echo(f"process {rank}/{world}: {len(todo)} of {len(mine)} prompts to make")
    for k in todo:
        result = pipe.generate([texts[k]], config.replace(seed=config.seed + k * n), progress=world == 1)
        images = []
        for j, (img, seed) in enumerate(zip(result.images, result.seeds)):
            name = f"{k * n + j:03d}.png"
            with atomic_path(out / name) as tmp:
                img.save(tmp, format="PNG")
            images.append({"file": name, "prompt": texts[k], "seed": seed})
        write_json(out / PARTS / f"{k:06d}.json", {"prompt": texts[k], "settings": settings, "images": images})
        if world > 1:
            click.echo(f"process {rank}: prompt {k + 1} of {len(texts)} done")
    barrier(world)
    if rank != 0:
        return
    from PIL import Image

    records = []
    for k in range(len(texts)):
        records += json.loads((out / PARTS / f"{k:06d}.json").read_text())["images"]
    pils = []
    for r in records:
        with Image.open(out / r["file"]) as im:
            pils.append(im.convert("RGB"))
    merged = GenerationResult(pils, None, [r["seed"] for r in records], [r["prompt"] for r in records], settings)
    write_outputs(out, merged, config, len(texts), files_written=True)
    shutil.rmtree(out / PARTS)
