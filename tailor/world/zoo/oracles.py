"""The world's oracle evaluators: small CNNs that read ground-truth attributes back out of images.

- :class:`AttributeClassifier`: shape, colour, pattern, background and render style of a single-object image;
- :class:`Embedder` used twice: the face-identity embedder (ArcFace-style additive angular margin over rendered
  identities under pose/lighting/style changes; FaceSim = cosine, Deng et al. 2019) and the instance embedder for
  subject similarity (DINO-like role: two renders of the same subject close, different subjects far; trained with
  a supervised contrastive loss over subjects under pose/background/style changes);
- :class:`Segmenter`: per-pixel background + shape classes.

Each is saved as ``weights/oracles/<name>.safetensors`` whose metadata holds its ``config`` (JSON), so
:func:`load_oracle` rebuilds it without code changes. Images go in as float tensors in [0, 1], (N, 3, H, W), any
size (resized to the oracle's input size).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailor.core.io import load_tensors, read_metadata, save_tensors
from tailor.errors import FormatError

ATTRIBUTES = ("shape", "color", "pattern", "background", "style")


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, 1, 1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


class Backbone(nn.Module):
    """64x64 image -> feature vector (4 stride-2 stages, global average pool)."""

    def __init__(self, width: int = 32, size: int = 64):
        super().__init__()
        self.size = size
        w = width
        self.stages = nn.ModuleList(
            [_block(3, w, 2), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 2)]
        )
        self.dim = 4 * w

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - 0.5) / 0.5

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, h = [], self.prepare(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1].mean(dim=(2, 3))


class AttributeClassifier(nn.Module):
    def __init__(self, classes: dict[str, list[str]], width: int = 32, size: int = 64):
        super().__init__()
        self.config = {"kind": "attributes", "classes": classes, "width": width, "size": size}
        self.classes = classes
        self.backbone = Backbone(width, size)
        self.heads = nn.ModuleDict({k: nn.Linear(self.backbone.dim, len(v)) for k, v in classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(x)
        return {k: head(f) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> list[dict[str, str]]:
        logits = self(x)
        idx = {k: v.argmax(-1).tolist() for k, v in logits.items()}
        return [{k: self.classes[k][idx[k][i]] for k in self.classes} for i in range(x.shape[0])]


class Embedder(nn.Module):
    """Image -> unit-norm embedding; ``num_classes`` > 0 adds ArcFace class centres used only in training."""

    def __init__(self, dim: int = 128, width: int = 32, size: int = 64, num_classes: int = 0, kind: str = "embedder"):
        super().__init__()
        self.config = {"kind": kind, "dim": dim, "width": width, "size": size, "num_classes": num_classes}
        self.backbone = Backbone(width, size)
        self.proj = nn.Sequential(
            nn.Linear(self.backbone.dim, self.backbone.dim), nn.SiLU(), nn.Linear(self.backbone.dim, dim)
        )
        self.centres = nn.Parameter(torch.randn(num_classes, dim) * 0.1) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.backbone(x)), dim=-1)

    def arcface_loss(self, emb: torch.Tensor, labels: torch.Tensor, s: float = 30.0, m: float = 0.3) -> torch.Tensor:
        """Additive angular margin loss (ArcFace): cos(theta_y + m) for the true class, scaled by ``s``."""
        cos = emb @ F.normalize(self.centres, dim=-1).t()
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = torch.cos(theta.gather(1, labels[:, None]) + m)
        logits = cos.scatter(1, labels[:, None], target)
        return F.cross_entropy(s * logits, labels)


class Segmenter(nn.Module):
    """A small encoder-decoder: per-pixel logits over ``classes`` (``background`` + shapes) at input size."""

    def __init__(self, classes: list[str], width: int = 16, size: int = 64):
        super().__init__()
        self.config = {"kind": "segmenter", "classes": classes, "width": width, "size": size}
        self.classes = classes
        w = width
        self.size = size
        self.enc = nn.ModuleList(
            [_block(3, w, 1), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 2)]
        )
        self.dec = nn.ModuleList([_block(8 * w, 2 * w, 1), _block(4 * w, w, 1), _block(2 * w, w, 1)])
        self.out = nn.Conv2d(w, len(classes), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        if (h0, w0) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        h = (x - 0.5) / 0.5
        skips = []
        for i, blk in enumerate(self.enc):
            h = blk(h)
            if i < len(self.enc) - 1:
                skips.append(h)
        for blk in self.dec:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = blk(torch.cat([h, skips.pop()], dim=1))
        logits = self.out(h)
        if (h0, w0) != (self.size, self.size):
            logits = F.interpolate(logits, size=(h0, w0), mode="bilinear", align_corners=False)
        return logits


def save_oracle(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    # float16 on disk (the shipped-weights budget); loading casts back to float32
    state = {
        k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in model.state_dict().items()
    }
    meta = {
        "method": "world-oracle",
        "config": json.dumps(model.config),
        **{k: json.dumps(v) for k, v in (extra or {}).items()},
    }
    save_tensors(path, state, meta)


def build_oracle(config: dict[str, Any]) -> nn.Module:
    kind = config["kind"]
    if kind == "attributes":
        return AttributeClassifier(config["classes"], config["width"], config["size"])
    if kind == "segmenter":
        return Segmenter(config["classes"], config["width"], config["size"])
    if kind == "detector":  # the object detector oracle lives in its own module
        from tailor.world.zoo.detector import build_detector

        return build_detector(config)
    return Embedder(config["dim"], config["width"], config["size"], config["num_classes"], kind)


def load_oracle(name_or_path: str | Path) -> nn.Module:
    """An oracle by name (``attributes``, ``face``, ``instance``, ``segmenter``, ``detector``) or from a file, in eval
    mode."""
    from tailor.world.zoo import oracle_path

    path = Path(name_or_path)
    if not path.suffix:
        path = oracle_path(str(name_or_path))
    meta = read_metadata(path)
    if "config" not in meta:
        raise FormatError(f"{path} is not a world oracle file (no config metadata); re-run `tailor world train-zoo`.")
    with torch.random.fork_rng(devices=[]):  # loading must not move the global RNG (a method's init follows it)
        model = build_oracle(json.loads(meta["config"]))
    state = load_tensors(path, check=False)  # BatchNorm counters are integers
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def to_unit(images) -> torch.Tensor:
    """uint8 HxWx3 arrays / PIL images / a float (N,3,H,W) tensor -> float (N, 3, H, W) in [0, 1]."""
    import numpy as np

    if isinstance(images, torch.Tensor):
        return images.float()
    from PIL import Image

    pil = [im.convert("RGB") if hasattr(im, "convert") else Image.fromarray(np.asarray(im, np.uint8)) for im in images]
    size = pil[0].size
    arr = np.stack([np.asarray(im if im.size == size else im.resize(size, Image.BICUBIC)) for im in pil])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
