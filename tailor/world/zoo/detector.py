"""The world's object detector oracle: boxes, shape class and colour of every object in an image (evaluation only).

A CenterNet-style detector (Zhou et al. 2019, "Objects as Points"): a small CNN predicts, on a grid of stride 4,
a heatmap per shape class whose peaks are object centres, the box width/height and the sub-cell centre offset at
each peak, and (a world addition) the object's colour. Decoding takes the 3x3 local maxima of the heatmaps, the top
``k`` over classes and positions, as scored boxes. It is an oracle: it grades images (mAP, the relation checker of
:mod:`tailor.eval.relations`) and no method reads it; a method that needs a detector for training gets its own.

Saved as ``weights/oracles/detector.safetensors`` (float16, config in the metadata) by the recipe
``python -m zoo detector`` (the source checkout's ``zoo/detector.py``). Images go in as float (N, 3, H, W) in
[0, 1], any size (resized to the detector's input size; boxes come back in the input's pixels).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailor.core.io import load_tensors, read_metadata
from tailor.errors import FormatError

DETECTOR_FILE = "detector"
STRIDE = 4


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Detector(nn.Module):
    """64x64 image -> 16x16 maps: ``heat`` (one logit per shape class), ``wh`` and ``offset`` (in grid cells),
    ``color`` (logits over colour names)."""

    def __init__(self, classes: list[str], colors: list[str], width: int = 16, size: int = 64):
        super().__init__()
        self.config = {"kind": "detector", "classes": list(classes), "colors": list(colors), "width": width}
        self.config |= {"size": size, "stride": STRIDE}
        self.classes, self.colors, self.size = list(classes), list(colors), size
        w = width
        self.stem = nn.Sequential(_conv(3, w), _conv(w, w))
        self.down1 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))
        self.down2 = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w))
        self.down3 = nn.Sequential(_conv(4 * w, 6 * w, 2), _conv(6 * w, 6 * w))
        self.fuse = nn.Sequential(_conv(10 * w, 4 * w), _conv(4 * w, 4 * w))
        self.trunk = _conv(4 * w, 4 * w)
        self.heads = nn.Conv2d(4 * w, len(classes) + 4 + len(colors), 1)
        with torch.no_grad():  # CenterNet's prior: heatmaps start near 0.1
            self.heads.bias.zero_()
            self.heads.bias[: len(classes)] = -2.19

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        h = self.down1(self.stem((x - 0.5) / 0.5))
        h2 = self.down2(h)
        h3 = F.interpolate(self.down3(h2), scale_factor=2, mode="nearest")
        out = self.heads(self.trunk(self.fuse(torch.cat([h2, h3], 1))))
        c = len(self.classes)
        return {"heat": out[:, :c], "wh": out[:, c : c + 2], "offset": out[:, c + 2 : c + 4], "color": out[:, c + 4 :]}

    @torch.no_grad()
    def detect(self, x: torch.Tensor, k: int = 20, threshold: float = 0.05) -> list[list[dict[str, Any]]]:
        """Per image: detections ``{"box": [x0, y0, x1, y1], "class", "color", "score"}`` in the input's pixels,
        best first (at most ``k``, score >= ``threshold``)."""
        self.eval()
        sy, sx = x.shape[-2] / self.size, x.shape[-1] / self.size
        out = self(x)
        heat = torch.sigmoid(out["heat"])
        peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
        n, c, gh, gw = heat.shape
        scores, idx = peaks.flatten(1).topk(min(k, c * gh * gw))
        results = []
        for b in range(n):
            dets = []
            for score, i in zip(scores[b].tolist(), idx[b].tolist()):
                if score < threshold:
                    break
                cls, pos = divmod(i, gh * gw)
                gy, gx = divmod(pos, gw)
                cx = (gx + float(out["offset"][b, 0, gy, gx])) * STRIDE
                cy = (gy + float(out["offset"][b, 1, gy, gx])) * STRIDE
                bw, bh = (max(0.0, float(v)) * STRIDE for v in out["wh"][b, :, gy, gx])
                box = [(cx - bw / 2) * sx, (cy - bh / 2) * sy, (cx + bw / 2) * sx, (cy + bh / 2) * sy]
                color = self.colors[int(out["color"][b, :, gy, gx].argmax())]
                dets.append({"box": [round(v, 3) for v in box], "class": self.classes[cls], "color": color,
                             "score": round(score, 5)})  # fmt: skip
            results.append(dets)
        return results


def build_detector(config: dict[str, Any]) -> Detector:
    return Detector(config["classes"], config["colors"], config["width"], config["size"])


def load_detector(path: str | Path | None = None) -> Detector:
    """The shipped detector oracle (``weights/oracles/detector.safetensors``) or one from ``path``, in eval mode."""
    from tailor.world.zoo import oracle_path

    path = oracle_path(DETECTOR_FILE) if path is None else Path(path)
    meta = read_metadata(path)
    config = json.loads(meta.get("config", "{}"))
    if config.get("kind") != "detector":
        raise FormatError(f"{path} is not a world detector file; train one with `python -m zoo detector`.")
    with torch.random.fork_rng(devices=[]):
        model = build_detector(config)
    state = load_tensors(path, check=False)  # BatchNorm counters are integers
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()
