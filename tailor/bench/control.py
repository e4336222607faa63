"""``tailor bench control``: spatial control on held-out world conditions (issue #5).

Each control model (ControlNet, Zhang et al. 2023; T2I-Adapter, Mou et al. 2023; ControlNeXt, Peng et al. 2024;
ControlNet++, Li et al. 2024) generates from conditions made from the exact ground truth of world renders at seeds
that training data does not draw (:data:`HELD_OUT_SEED` onwards), prompted with the render's own caption. Scores,
as in ControlNet++'s evaluation:

- controllability: Canny-edge F1 (1-pixel tolerance) between the generated image's Canny edges and the condition's
  edges for edge models; mIoU between the world segmenter oracle's prediction on the generated image and the ground
  truth label map for segmentation models;
- prompt fidelity: attribute-oracle accuracy of what the caption names (shape, colour, pattern, background) and
  CLIP-T-like (world CLIP);
- cost: trainable parameters, training seconds per step (a short timed run of the same method and config on the
  same base, batch 4), sampling seconds per step with the control attached (the "no control" row: without).

Models default to the shipped names (``canny``, ``seg``, ``t2i-canny``, ``controlnext-canny``); ``--model
NAME=PATH`` overrides or adds one (any path ``tailor.load`` reads, e.g. a ControlNet++ training folder).
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailor.bench import common as C
from tailor.errors import InputError

DEFAULT_MODELS = {"canny": "canny", "seg": "seg", "t2i-canny": "t2i-canny", "controlnext-canny": "controlnext-canny"}
HELD_OUT_SEED = 900_000  # condition i renders world object HELD_OUT_SEED + i
QUICK = dict(conditions=2, seeds=1, sample_steps=2, train_steps=1)


@dataclass
class Settings:
    base: str = "world"
    out: Path = Path("outputs/bench/control")
    models: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    conditions: int = 16
    seeds: int = 2
    sample_steps: int = 20
    guidance: float = 5.0
    train_steps: int = 10  # timed training steps per method
    batch_size: int = 4
    fresh: bool = False
    segmenter: str = "segmenter"  # the world segmenter oracle that reads the seg rows (tailor.eval.control.SEGMENTER)

    def check(self) -> None:
        if min(self.conditions, self.seeds, self.sample_steps, self.train_steps, self.batch_size) < 1:
            raise InputError("--conditions, --seeds, --sample-steps, --train-steps and --batch-size must be >= 1.")


def load_model(name: str, path: str):
    import tailor

    try:
        method = tailor.load(path)
    except Exception as e:  # a name that does not resolve yet, or a broken file
        raise InputError(
            f"control model {name}={path} cannot be loaded ({e}); pass --model {name}=PATH with a trained control "
            f"model (a `tailor train controlnet|t2i_adapter|controlnext|controlnet_pp` output folder)."
        ) from e
    kind = getattr(method.config, "condition", None)
    if kind is None:
        raise InputError(f"{name}={path} is a {method.name} artifact, not a control model; pass a control model.")
    return method, kind


def held_out(n: int, size: int) -> list:
    from tailor.world import render_object

    return [render_object(HELD_OUT_SEED + i, size=size) for i in range(n)]


def condition_batch(samples: list, kind: str) -> torch.Tensor:
    from tailor.conditions import from_truth, truth_of_sample
    from tailor.conditions.data import to_condition_tensor

    return torch.stack([to_condition_tensor(from_truth(kind, truth_of_sample(s))) for s in samples])


def seg_miou(images, samples: list, segmenter: str = "segmenter") -> float:
    """Mean over images of the mIoU (classes present in truth or prediction) of a segmenter oracle vs truth."""
    from tailor.conditions import truth_of_sample
    from tailor.eval.control import label_miou, segment

    pred = segment(images, samples[0].mask.shape, segmenter)
    return float(np.mean([label_miou(p, truth_of_sample(s)["labels_map"]) for p, s in zip(pred, samples)]))


def edge_f1_scores(images, samples: list) -> float:
    from tailor.conditions import from_truth, truth_of_sample
    from tailor.eval.control import edge_f1_to_map

    return float(np.mean([edge_f1_to_map(im, from_truth("canny", truth_of_sample(s))[..., 0] > 0)
                          for im, s in zip(images, samples)]))  # fmt: skip


def train_seconds_per_step(
    method_name: str, config, s: Settings, folder: Path, model_config: dict | None = None
) -> dict[str, float]:
    """Seconds per optimizer step on world objects: the median wall time of ``train_steps`` steps after 2 warm-up
    steps, and the process CPU time of a (1 + ``train_steps``)-step run minus that of a 1-step run (setup cancels).
    ``model_config``: the loaded model's architecture (else the method's default for the base)."""
    import json

    import tailor

    spec = tailor.get_spec(method_name)
    cpu = {}
    try:
        for steps in (1, 1, 1 + s.train_steps):  # the first run takes the one-off costs (lazy imports, caches)
            method = spec.method(config) if config is not None else spec.method()
            if model_config is not None:  # a fresh model of the loaded one's widths, not the base's default
                method.model_config = dict(model_config)
            cfg = tailor.TrainConfig(base=s.base, data="world:objects", steps=steps + 1, batch_size=s.batch_size,
                                     out=str(folder / str(steps)), log_every=1, seed=0)  # fmt: skip
            comps = tailor.load_components(s.base)
            with C.timer() as t:
                tailor.train(method, cfg, components=comps)
            cpu[steps] = t["cpu_seconds"]
        log = (folder / str(1 + s.train_steps) / "log.jsonl").read_text().splitlines()
        recs = [json.loads(x) for x in log if x.strip()]
        wall = statistics.median(1.0 / r["it_s"] for r in recs[2:] or recs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"train_s_per_step": wall, "train_cpu_s_per_step": (cpu[1 + s.train_steps] - cpu[1]) / s.train_steps}


def generate_row(pipe, samples, n: int, s: Settings) -> tuple[list, dict[str, float]]:
    prompts = [x.caption for x in samples]
    with C.timer() as t:
        images = pipe.generate(prompts, n=n, seed=C.GEN_SEED, steps=s.sample_steps, guidance=s.guidance).images
    return images, {"sample_s_per_step": t["seconds"] / s.sample_steps,
                    "sample_cpu_s_per_step": t["cpu_seconds"] / s.sample_steps}  # fmt: skip


def scores(images, samples: list, kind: str | None, segmenter: str = "segmenter") -> dict[str, Any]:
    """Controllability of the model's kind (both for the no-control row) and prompt fidelity."""
    from tailor.eval.world import prompt_scores, world_scores

    captions = [x.caption for x in samples]
    acc = world_scores(images, captions)["accuracy"]
    named = [acc[k] for k in ("shape", "color", "pattern", "background") if k in acc]
    return {
        "edge_f1": edge_f1_scores(images, samples) if kind in (None, "canny", "hf") else None,
        "miou": seg_miou(images, samples, segmenter) if kind in (None, "seg") else None,
        "attr_acc": float(np.mean(named)) if named else None,
        "color_acc": acc.get("color"),
        "background_acc": acc.get("background"),
        "clip_t_like": prompt_scores(images, captions)["clip_t_like"],
    }


def timed_training(
    name: str, method_name: str, config, s: Settings, root: Path, model_config: dict | None = None
) -> dict[str, Any]:
    """Training s/step, cached in ``root/timing.json`` per (method, config, model architecture, base, steps,
    batch): two files of one method at different widths are timed apart."""
    import json

    key = C.stamp(dict(method=method_name, config=config.to_dict() if config is not None else None, base=s.base,
                       steps=s.train_steps, bs=s.batch_size,
                       **({"model": model_config} if model_config is not None else {})))  # fmt: skip
    cache_file = root / "timing.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() and not s.fresh else {}
    if key not in cache:
        try:
            cache[key] = train_seconds_per_step(method_name, config, s, root / "timing" / name, model_config)
        except Exception as e:  # report, do not lose the other rows: e.g. a method whose training needs extra inputs
            cache[key] = {"train_s_per_step": None, "train_error": f"{type(e).__name__}: {e}"}
        shutil.rmtree(root / "timing", ignore_errors=True)
        from tailor.core.io import write_text

        write_text(cache_file, json.dumps(cache, indent=2))
    return cache[key]


COLUMNS = [
    ("model", "model", ""),
    ("method", "method", ""),
    ("condition", "condition", ""),
    ("edge_f1", "edge F1", ".3f"),
    ("miou", "mIoU", ".3f"),
    ("attr_acc", "attr acc", ".3f"),
    ("clip_t_like", "CLIP-T-like", ".3f"),
    ("params", "trainable params", ","),
    ("train_s_per_step", "train s/step", ".3f"),
    ("train_cpu_s_per_step", "train CPU s/step", ".3f"),
    ("sample_s_per_step", "sample s/step", ".3f"),
    ("sample_cpu_s_per_step", "sample CPU s/step", ".3f"),
]


def run(s: Settings) -> dict[str, Any]:
    import tailor
    from tailor.core.progress import make_progress

    root = C.start(s)
    t0 = time.perf_counter()
    loaded = {name: load_model(name, path) for name, path in s.models.items()}  # fail before any work
    size = tailor.load_components(s.base).default_size
    samples = held_out(s.conditions, size)
    per_image = [x for x in samples for _ in range(s.seeds)]
    rows, sheet = [], []
    with make_progress() as progress:
        task = progress.add_task("control", total=len(loaded) + 1, info="")
        progress.update(task, info="no control")
        pipe = tailor.Pipeline(tailor.load_components(s.base))
        images, sps = generate_row(pipe, samples, s.seeds, s)
        C.save_images(images, root / "images" / "no_control", "img")
        row = {"model": "no control", "method": "-", "condition": "-", "params": 0} | sps
        row |= scores(images, per_image, None, s.segmenter)
        rows.append(row | timed_training("no_control", "finetune", None, s, root))
        sheet.append(("no control", images[:: s.seeds][:8]))
        progress.advance(task)
        for name, (method, kind) in loaded.items():
            progress.update(task, info=name)
            conds = condition_batch(samples, kind)
            pipe = tailor.Pipeline(tailor.load_components(s.base)).attach(method, image=conds)
            params = sum(p.numel() for p in method.trainable_parameters())
            images, sps = generate_row(pipe, samples, s.seeds, s)
            pipe.detach()
            C.save_images(images, root / "images" / name, "img")
            row = {"model": name, "path": s.models[name], "method": method.name, "condition": kind, "params": params}
            row |= sps | scores(images, per_image, kind, s.segmenter)
            arch = getattr(method, "model_config", None)
            rows.append(row | timed_training(name, method.name, method.config, s, root, arch))
            from tailor.core.images import to_pil

            sheet.append((f"{name} condition", to_pil(conds[:8])))
            sheet.append((name, images[:: s.seeds][:8]))
            progress.advance(task)
    C.contact_sheet(sheet, root / "grid.png")
    table = C.Table(COLUMNS, rows)
    seeds = [HELD_OUT_SEED, HELD_OUT_SEED + s.conditions - 1]
    extra = {"held_out_seeds": seeds, "images_per_model": len(per_image)}
    return C.finish(root, "control", s, rows, table, t0, before_rows=extra)
