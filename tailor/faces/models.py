"""World face models of the identity methods (InstantID, Wang et al. 2024; PhotoMaker; PuLID): the *conditioning*
face embedder and the world face-keypoint detector.

- The conditioning embedder plays ArcFace's role in InstantID / PuLID: face image -> unit embedding that the
  adapters read. It is the oracle's :class:`~tailor.world.zoo.oracles.Embedder` class trained by the oracle's own
  recipe (ArcFace + SupCon over identities 0-799), but with another width, embedding width and seed, so the
  FaceSim oracle that grades identity methods is never the network they were conditioned on.
- :class:`KeypointDetector` regresses the 5 InstantID points (eye centres, nose tip, mouth corners) and the face box
  of a world render from pixels: the fallback when an image carries no renderer metadata (e.g. a generated image).

Both ship (float16, < 1 MB) under ``tailor/world/zoo/weights/faces/``; their configs (embedding width included) live
in the files' metadata, so nothing here hard-codes a width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailor.core.io import load_tensors, read_metadata
from tailor.errors import FormatError, InputError
from tailor.world.zoo import WEIGHTS
from tailor.world.zoo.oracles import Backbone, build_oracle

FACES = WEIGHTS / "faces"
EMBEDDER_FILE = "embedder.safetensors"
DETECTOR_FILE = "keypoints.safetensors"


class KeypointDetector(nn.Module):
    """Image -> (``(N, 7, 2)`` 5 keypoints + face-box corners as fractions of the image size, ``(N,)`` face logit)."""

    def __init__(self, width: int = 16, size: int = 64, kind: str = "face_keypoints"):
        super().__init__()
        self.config = {"kind": kind, "width": width, "size": size}
        self.backbone = Backbone(width, size)
        self.head = nn.Sequential(nn.Linear(self.backbone.dim, 128), nn.SiLU(), nn.Linear(128, 15))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.backbone(x))
        return out[:, :14].view(-1, 7, 2) + 0.5, out[:, 14]


def weights_path(name: str) -> Path:
    path = FACES / name
    if not path.is_file():
        raise InputError(
            f"the world face model {path} is missing; train it with `python -m zoo faces` in a source checkout "
            "(or pass a file)."
        )
    return path


def load_face_model(path: str | Path) -> nn.Module:
    """A face model file (the conditioning embedder or the keypoint detector), float32, eval mode."""
    path = Path(path)
    meta = read_metadata(path)
    if "config" not in meta:
        raise FormatError(
            f"{path} is not a world face-model file (no config metadata); pass one written by the recipe."
        )
    config: dict[str, Any] = json.loads(meta["config"])
    with torch.random.fork_rng(devices=[]):  # loading must not move the global RNG (a method's init follows it)
        if config.get("kind") == "face_keypoints":
            model: nn.Module = KeypointDetector(config["width"], config["size"])
        else:
            model = build_oracle(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_tensors(path).items()}
    model.load_state_dict(state)
    return model.eval()


_CACHE: dict[str, nn.Module] = {}


def conditioning_embedder(path: str | Path | None = None) -> nn.Module:
    """The conditioning face embedder (default: the shipped world one), cached."""
    key = str(path or weights_path(EMBEDDER_FILE))
    if key not in _CACHE:
        _CACHE[key] = load_face_model(key).requires_grad_(False)
    return _CACHE[key]


def keypoint_detector(path: str | Path | None = None) -> KeypointDetector:
    key = str(path or weights_path(DETECTOR_FILE))
    if key not in _CACHE:
        _CACHE[key] = load_face_model(key).requires_grad_(False)
    return _CACHE[key]  # type: ignore[return-value]


def embed_dim(model: nn.Module) -> int:
    return int(model.config["dim"])
