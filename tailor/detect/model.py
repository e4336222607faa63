"""The detector tailor trains: CenterNet-style (Zhou et al. 2019, "Objects as Points"), small enough for a CPU.

The network is the world detector oracle's architecture (:class:`tailor.world.zoo.detector.Detector`: a 3-stage CNN
with an 8-to-16 upsampling fusion, heads for a heatmap per class, box width/height and centre offset on a stride-4
grid) built fresh, with its own weights, for the classes of the user's data: the oracle stays an evaluator that no
training reads. The oracle's colour head is kept with one class (it is never trained and never read), so the
oracle's decoding (3x3 local maxima of the heatmaps, top ``k``) serves unchanged.

Files: ``detector.safetensors`` (float32) whose metadata holds ``method: "detect"`` and the ``config`` (classes,
width, input size), so :func:`load_detector` rebuilds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tailor.core.io import load_tensors, read_metadata, save_tensors
from tailor.errors import FormatError, InputError
from tailor.world.zoo.detector import Detector

METHOD = "detect"
DETECTOR_NAME = "detector.safetensors"
#: the one placeholder class of the inherited colour head (never trained or read)
NO_COLOR = ("any",)


def build_detector(classes: list[str], width: int = 16, size: int = 64) -> Detector:
    """A fresh detector for ``classes`` (``size``: the square input side; images of other sizes are resized)."""
    if not classes:
        raise InputError("the training data hold no object classes; give the COCO file categories and boxes.")
    if size % 8 or size < 16:
        raise InputError(f"detector input size must be a multiple of 8 and at least 16; got {size}.")
    model = Detector(list(classes), list(NO_COLOR), width=width, size=size)
    model.config["kind"] = METHOD
    return model


def save_detector(model: Detector, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the weights and config atomically (``save_tensors`` renames a finished file into place)."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"method": METHOD, "config": json.dumps(model.config)}
    meta |= {k: json.dumps(v) for k, v in (extra or {}).items()}
    save_tensors(path, state, meta)
    return Path(path)


def load_detector(path: str | Path) -> Detector:
    """A detector written by ``tailor detect train`` (a file, or the training ``--out`` folder), in eval mode."""
    path = Path(path)
    if path.is_dir():
        path = path / DETECTOR_NAME
    if not path.is_file():
        raise InputError(f"detector {path} does not exist; train one with `tailor detect train`.")
    meta = read_metadata(path)
    if meta.get("method") != METHOD:
        raise FormatError(f"{path} is not a tailor detector file; train one with `tailor detect train`.")
    cfg = json.loads(meta["config"])
    with torch.random.fork_rng(devices=[]):
        model = build_detector(cfg["classes"], cfg["width"], cfg["size"])
    state = load_tensors(path, check=False)  # BatchNorm counters are integers
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def detect(model: Detector, images: torch.Tensor, k: int = 20, threshold: float = 0.01) -> list[list[dict]]:
    """Per image ``{"box", "class", "score"}`` in the input's pixels, best first (the oracle's decoding)."""
    out = model.detect(images, k=k, threshold=threshold)
    return [[{key: d[key] for key in ("box", "class", "score")} for d in dets] for dets in out]
