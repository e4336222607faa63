"""DreamBooth's training data (Ruiz et al. 2022): instance items with ``a [V] [class]`` and cached class images.

Class images are generated once by the frozen base with ``a [class]`` into a cache folder keyed by (base, class prompt,
count, seed, sampler steps, guidance, size) and reused by every later run; image ``i`` uses seed ``class_seed + i``,
so an interrupted generation resumes where it stopped. :class:`PriorDataset` pairs every instance item with a class
image; :func:`expand_batch` (the method's trainer hook) makes each batch of B pairs 2B rows, B of each kind, as in the
paper and diffusers, and the method's ``loss`` splits the rows by their ``prior`` flag.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from tailor.core.io import atomic_path, write_json

MANIFEST = "class_images.json"


def default_cache_root() -> Path:
    root = os.environ.get("TAILOR_CACHE") or Path.home() / ".cache" / "tailor"
    return Path(root) / "dreambooth_class_images"


def class_folder(root: str | Path, spec: dict[str, Any]) -> Path:
    """``<root>/<class slug>-<hash of spec>``: one folder per (base, prompt, count, seed, steps, guidance, size)."""
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "-", spec["prompt"].lower()).strip("-")[:40] or "class"
    return Path(root) / f"{slug}-{key}"


def missing_images(folder: Path, count: int) -> list[int]:
    return [i for i in range(count) if not (folder / f"{i:05d}.png").is_file()]


def generate_class_images(pipe, folder: Path, spec: dict[str, Any], batch: int = 4) -> int:
    """Generate the class images ``folder`` lacks; returns how many were generated (0 when the cache is complete)."""
    todo = missing_images(folder, spec["count"])
    if not todo and (folder / MANIFEST).is_file():
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    runs: list[list[int]] = []  # contiguous runs of missing indices, at most `batch` long (seed + i per image)
    for i in todo:
        if runs and runs[-1][-1] == i - 1 and len(runs[-1]) < batch:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        result = pipe.generate(
            spec["prompt"],
            n=len(run),
            seed=spec["seed"] + run[0],
            steps=spec["steps"],
            guidance=spec["guidance"],
            width=spec["size"],
            height=spec["size"],
        )
        for i, img in zip(run, result.images):
            with atomic_path(folder / f"{i:05d}.png") as tmp:
                img.save(tmp, format="PNG")
    write_json(folder / MANIFEST, spec)
    return len(todo)


#: class rows draw their noise from positions far past any run's instance positions (the trainer's positions are
#: sample indices, < steps * batch * processes), and their latents are cached under their own key space
CLASS_POSITION_OFFSET = 1 << 40
CLASS_CACHE_KEY = 2  # the trainer uses 0 (training items) and 1 (held-out items)


class PriorDataset(Dataset):
    """Instance items with ``instance_prompt``, each paired with a class image (``class_pixel_values``) if any.

    ``len = max(#instance, #class)`` (diffusers' convention): the smaller set repeats. :func:`expand_batch` turns a
    batch of B pairs into 2B rows (B instance rows, then B class rows, flagged ``prior``) before the objective runs.
    """

    def __init__(self, instance: Dataset, instance_prompt: str, classes: Dataset | None, class_prompt: str):
        self.instance, self.classes = instance, classes
        self.instance_prompt, self.class_prompt = instance_prompt, class_prompt
        self.n = max(len(instance), len(classes)) if classes is not None else len(instance)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"pixel_values": self.instance[i % len(self.instance)]["pixel_values"], "caption": self.instance_prompt}
        if self.classes is not None:
            item["class_pixel_values"] = self.classes[i % len(self.classes)]["pixel_values"]
            item["class_caption"] = self.class_prompt
        return item


def expand_batch(batch: dict[str, Any], keys: list, positions: list[int]) -> tuple[dict[str, Any], list, list[int]]:
    """B (instance, class) pairs -> 2B rows: instance rows first, then class rows, with a ``prior`` flag per row."""
    if "class_pixel_values" not in batch:
        return batch, keys, positions
    n = len(positions)
    rows = {
        "pixel_values": torch.cat([batch["pixel_values"], batch["class_pixel_values"]]),
        "caption": list(batch["caption"]) + list(batch["class_caption"]),
        "prior": torch.tensor([False] * n + [True] * n),
    }
    class_keys = [(CLASS_CACHE_KEY, k[1]) for k in keys]
    return rows, list(keys) + class_keys, list(positions) + [p + CLASS_POSITION_OFFSET for p in positions]
