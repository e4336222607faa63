"""The foreground classifier that drops failed syntheses (ODGEN, Zhu et al. 2024, section 3.3: a classifier trained
on the real set's object crops and background crops removes generated boxes that hold no object of their class).

A small CNN (three stride-2 conv stages, global average pooling, a linear head) classifies a box crop (2 px of
context, resized to 24x24) into the real set's classes or ``background``. It is trained on the real renders of the
domain only (never on the world's oracles, which stay evaluators): every object's crop, and background crops of
the same size distribution placed where they overlap no object by more than 10% IoU; crops are mirrored and blurred
at random (sigma up to 1.2 px: generated images are softer than renders). A synthetic image is kept when every box's
crop gives its layout class probability >= ``threshold``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tailor.core.io import load_tensors, read_metadata, save_tensors

BACKGROUND = "background"
CROP = 24
PAD = 2


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.GroupNorm(4, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(4, cout), nn.SiLU())  # fmt: skip


class CropClassifier(nn.Module):
    def __init__(self, classes: list[str], width: int = 16):
        super().__init__()
        self.classes = [*classes, BACKGROUND]
        self.config = {"classes": list(classes), "width": width}
        self.body = nn.Sequential(_stage(3, width), _stage(width, 2 * width), _stage(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, len(self.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body((x - 0.5) / 0.5).mean(dim=(2, 3)))


def crop(image: np.ndarray, box) -> np.ndarray:
    """The box with ``PAD`` px of context, clipped to the image, resized to ``CROP`` x ``CROP`` (uint8)."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(0, x0 - PAD), max(0, y0 - PAD), min(w, x1 + PAD), min(h, y1 + PAD)
    return cv2.resize(image[y0:y1, x0:x1], (CROP, CROP), interpolation=cv2.INTER_AREA)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def training_crops(images: list[np.ndarray], objects: list[list[dict]], classes: list[str], seed: int):
    """Object crops (label = class index) and as many background crops (label = len(classes))."""
    rng = np.random.default_rng([seed, 7])
    xs, ys = [], []
    for img, objs in zip(images, objects):
        h, w = img.shape[:2]
        for o in objs:
            xs.append(crop(img, o["box"]))
            ys.append(classes.index(o["class"]))
            bw, bh = o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]
            for _ in range(20):  # a background crop of this object's size where no object is
                x0, y0 = rng.uniform(0, max(1, w - bw)), rng.uniform(0, max(1, h - bh))
                cand = [x0, y0, x0 + bw, y0 + bh]
                if all(_iou(cand, p["box"]) < 0.1 for p in objs):
                    xs.append(crop(img, cand))
                    ys.append(len(classes))
                    break
    return np.stack(xs), np.asarray(ys)


def _augment(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    import cv2

    out = []
    for x in batch:
        if rng.random() < 0.5:
            x = x[:, ::-1]
        sigma = rng.uniform(0, 1.2)
        if sigma > 0.3:
            x = cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), sigma)
        out.append(np.ascontiguousarray(x))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def train_classifier(images, objects, classes: list[str], seed: int = 0, steps: int = 300, batch: int = 64):
    """Train on the real set's crops; deterministic in ``seed`` (batches and augmentation drawn per step)."""
    xs, ys = training_crops(images, objects, classes, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CropClassifier(classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    model.train()
    for step in range(steps):
        rng = np.random.default_rng([seed, step, 8])
        idx = rng.integers(len(xs), size=batch)
        loss = F.cross_entropy(model(_augment(xs[idx], rng)), torch.from_numpy(ys[idx]).long())
        for g in opt.param_groups:
            g["lr"] = 2e-3 * min(1.0, (step + 1) / 20)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def save_classifier(model: CropClassifier, path: str | Path) -> None:
    save_tensors(path, model.state_dict(), {"method": "synth-filter", "config": json.dumps(model.config)})


def load_classifier(path: str | Path) -> CropClassifier:
    cfg = json.loads(read_metadata(path)["config"])
    model = CropClassifier(cfg["classes"], cfg["width"])
    model.load_state_dict(load_tensors(path))
    return model.eval()


@torch.no_grad()
def box_scores(model: CropClassifier, image: np.ndarray, objects: list[dict]) -> list[float]:
    """Per box: the classifier's probability of the box's layout class."""
    if not objects:
        return []
    x = torch.from_numpy(np.stack([crop(image, o["box"]) for o in objects])).permute(0, 3, 1, 2).float() / 255.0
    p = model(x).softmax(-1)
    return [float(p[i, model.classes.index(o["class"])]) for i, o in enumerate(objects)]
