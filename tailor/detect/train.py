"""Train and evaluate tailor's CenterNet-style detector on COCO folders (``tailor detect train|eval``).

Training reads one or more COCO folders (:mod:`tailor.detect.coco`; e.g. real renders + synthetic images), resizes
every image to the detector's input size (boxes scaled with it) and keeps them in memory. A batch is a function of
``(seed, step)``: images drawn with replacement, each mirrored left-right half the time (boxes mirrored too), so a
resumed run sees the batches an uninterrupted one would. AdamW (weight decay 1e-4), linear warmup then cosine decay.
A checkpoint (weights and AdamW moments, ``checkpoint.safetensors``) is written every ``checkpoint_every`` steps and
``--resume`` continues from it; the detector file is written once, at the end, atomically.

Evaluation is COCO box mAP (:func:`tailor.eval.detection.coco_map`, tested against pycocotools): @.50:.95, @.50,
@.75 and per class, over detections with score >= 0.01 (at most 20 per image).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailor.detect.coco import CocoSet, read_coco
from tailor.detect.loss import centernet_loss, centernet_targets
from tailor.detect.model import DETECTOR_NAME, build_detector, detect, load_detector, save_detector
from tailor.errors import ConfigError, InputError

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class DetectTrainConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    width: int = 16
    size: int = 64
    seed: int = 0
    flip: bool = True
    checkpoint_every: int = 200

    def __post_init__(self):
        for name in ("steps", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}.")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive; got {self.lr}.")


def load_images(data: CocoSet, size: int) -> tuple[np.ndarray, list[list[dict]]]:
    """Every image as uint8 (N, size, size, 3) and its objects with boxes in those pixels."""
    from PIL import Image, UnidentifiedImageError

    arrays, objects = [], []
    for im, objs in zip(data.images, data.objects):
        try:
            with Image.open(im["file"]) as pil:
                rgb = pil.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(f"image {im['file']} cannot be read as an image ({e}); replace or drop it.") from e
        if rgb.size != (im["width"], im["height"]):
            raise InputError(
                f"image {im['file']} is {rgb.size[0]}x{rgb.size[1]} but its COCO record says "
                f"{im['width']}x{im['height']}; fix the record."
            )
        sx, sy = size / rgb.size[0], size / rgb.size[1]
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(rgb))
        objects.append([{"box": [o["box"][0] * sx, o["box"][1] * sy, o["box"][2] * sx, o["box"][3] * sy],
                         "class": o["class"]} for o in objs])  # fmt: skip
    return np.stack(arrays), objects


def merged_classes(sets: list[CocoSet]) -> list[str]:
    """The classes of several sets in first-seen order (a class absent from one set is simply never positive)."""
    out: list[str] = []
    for s in sets:
        out += [c for c in s.classes if c not in out]
    return out


def batch_at(images: np.ndarray, objects: list[list[dict]], cfg: DetectTrainConfig, step: int):
    """The batch of ``step``: a function of ``(seed, step)`` only."""
    rng = np.random.default_rng([cfg.seed, step])
    idx = rng.integers(len(images), size=cfg.batch_size)
    flips = rng.random(cfg.batch_size) < 0.5 if cfg.flip else np.zeros(cfg.batch_size, bool)
    batch, objs = images[idx].copy(), []
    for k, (i, flip) in enumerate(zip(idx, flips)):
        o = objects[i]
        if flip:
            batch[k] = batch[k, :, ::-1]
            o = [{"box": [cfg.size - b[2], b[1], cfg.size - b[0], b[3]], "class": x["class"]}
                 for x in o for b in [x["box"]]]  # fmt: skip
        objs.append(o)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0, objs


def lr_at(cfg: DetectTrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _save_checkpoint(path: Path, model, opt, step: int, cfg: DetectTrainConfig, classes: list[str]) -> None:
    from tailor.core.io import save_tensors

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(float(v))
    meta = {"step": step, "config": asdict(cfg), "classes": classes}
    save_tensors(path, tensors, meta)


def _load_checkpoint(path: Path, model, opt, cfg: DetectTrainConfig, classes: list[str]) -> int:
    from tailor.core.io import load_tensors, meta_json, read_metadata

    meta = read_metadata(path)
    saved = meta_json(meta, "config", {})
    if meta_json(meta, "classes") != classes or any(saved.get(k) != v for k, v in asdict(cfg).items() if k != "steps"):
        raise ConfigError(
            f"checkpoint {path} was written with other data or options; resume with the same ones or pick a new --out."
        )
    tensors = load_tensors(path, check=False)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(model.parameters()):
        state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if state:
            opt.state[p] = state
    return int(meta["step"])


def train_detector(data: list[str | Path], out: str | Path, cfg: DetectTrainConfig, resume: bool = False,
                   log=print) -> dict[str, Any]:  # fmt: skip
    """Train on the COCO folders ``data``; writes ``out/detector.safetensors`` and ``out/log.jsonl``."""
    from tailor.core.io import write_json

    sets = [read_coco(d) for d in data]
    classes = merged_classes(sets)
    parts = [load_images(s, cfg.size) for s in sets]
    images = np.concatenate([p[0] for p in parts])
    objects = [o for p in parts for o in p[1]]
    if not any(objects):
        raise InputError(f"the training data {', '.join(map(str, data))} hold no boxes; give it annotated images.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_detector(classes, cfg.width, cfg.size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if resume and (out / CHECKPOINT).is_file():
        start = _load_checkpoint(out / CHECKPOINT, model, opt, cfg, classes)
        log(f"resumed from step {start}")
    grid, stride = cfg.size // 4, 4
    t0, window = time.perf_counter(), []
    model.train()
    with (out / "log.jsonl").open("a") as logf:
        for step in range(start, cfg.steps):
            x, objs = batch_at(images, objects, cfg, step)
            heat, rows = centernet_targets(objs, classes, grid, stride)
            loss, parts_ = centernet_loss(model(x), heat, rows)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            window.append(loss.item())
            if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
                rate = (step + 1 - start) / (time.perf_counter() - t0)
                row = {"step": step + 1, "loss": float(np.mean(window)), **parts_, "it_s": round(rate, 3)}
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                log(f"step {step + 1}/{cfg.steps}  loss {row['loss']:.4f}  {1 / rate:.2f} s/step")
                window = []
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                _save_checkpoint(out / CHECKPOINT, model, opt, step + 1, cfg, classes)
    model.eval()
    record = {"classes": classes, "train_images": len(images), "data": [str(d) for d in data], **asdict(cfg)}
    save_detector(model, out / DETECTOR_NAME, {"train": record})
    write_json(out / "tailor.json", {"command": "tailor detect train", **record})
    (out / CHECKPOINT).unlink(missing_ok=True)
    return record


@torch.no_grad()
def evaluate_detector(model_path: str | Path, data: str | Path, batch: int = 100) -> dict[str, Any]:
    """COCO mAP of a trained detector on a COCO folder; its classes must all be the detector's."""
    from tailor.eval.detection import coco_map

    model = load_detector(model_path)
    coco = read_coco(data)
    unknown = sorted({o["class"] for objs in coco.objects for o in objs} - set(model.classes))
    if unknown:
        raise InputError(
            f"COCO data {data} has class {unknown[0]!r}, which detector {model_path} was not trained on (its classes: "
            f"{', '.join(model.classes)}); evaluate on data of those classes."
        )
    images, objects = load_images(coco, model.size)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    dets = []
    for i in range(0, len(x), batch):
        dets += detect(model, x[i : i + batch])
    result = coco_map(objects, dets)
    return result | {"detections": dets}
