"""ODGEN's condition encoders (Zhu et al. 2024, section 3.2) and the canvases of its image list.

- Image list: each object's image resized into its own box on an empty (black) canvas, one canvas per object, padded
  with empty canvases to ``N`` (:func:`build_canvases`). :class:`ImageListEncoder` encodes every canvas with one
  shared trainable conv stem and sums the valid ones into the ControlNet's 3-channel hint. The stem is residual with
  a zero-initialised last conv, so at initialisation the hint is exactly the sum of the canvases (the objects pasted
  in their boxes), which a ControlNet started from the world's ``layout`` ControlNet reads from the first step.
- Text list: each object's ``a <class>`` encoded separately by the frozen text encoder (its pooled output), then by
  :class:`TextListEncoder` (a trainable MLP + a learned embedding per slot; empty slots get a learned null token):
  ``N`` tokens, the ControlNet's cross-attention context. The UNet keeps the global caption.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def paste_box(box, size: int) -> tuple[int, int, int, int]:
    """A box ``[x0, y0, x1, y1]`` (float pixels) as the integer pixel span an object is pasted into: rounded, clipped
    to the image, at least one pixel wide and high."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, y0 = min(max(x0, 0), size - 1), min(max(y0, 0), size - 1)
    x1, y1 = min(max(x1, x0 + 1), size), min(max(y1, y0 + 1), size)
    return x0, y0, x1, y1


def build_canvases(images: list[np.ndarray], boxes: list, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 3, size, size)`` canvases in [0, 1] and their ``(n,)`` mask: canvas ``k`` holds ``images[k]`` (uint8
    HxWx3) resized (area interpolation; exact when the sizes agree) into ``boxes[k]``, zero elsewhere; canvases past
    the objects are all zero with mask 0."""
    import cv2

    canvases = torch.zeros(n, 3, size, size)
    mask = torch.zeros(n)
    for k, (img, box) in enumerate(zip(images[:n], boxes[:n])):
        x0, y0, x1, y1 = paste_box(box, size)
        img = np.ascontiguousarray(img[..., :3])
        if img.shape[:2] != (y1 - y0, x1 - x0):
            img = cv2.resize(img, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        canvases[k, :, y0:y1, x0:x1] = torch.from_numpy(img).permute(2, 0, 1).float() / 255
        mask[k] = 1
    return canvases, mask


def box_mask(boxes: torch.Tensor, mask: torch.Tensor, size: int, grid: int) -> torch.Tensor:
    """``(B, 1, grid, grid)``: 1 on every cell of a ``grid`` x ``grid`` map of the image touched by a valid box
    (``boxes`` ``(B, N, 4)`` in pixels of ``size``, ``mask`` ``(B, N)``), 0 elsewhere."""
    out = torch.zeros(boxes.shape[0], 1, grid, grid)
    f = size / grid
    for b in range(boxes.shape[0]):
        for k in range(boxes.shape[1]):
            if mask[b, k] <= 0:
                continue
            x0, y0, x1, y1 = (float(v) for v in boxes[b, k])
            c0, r0 = int(np.floor(x0 / f)), int(np.floor(y0 / f))
            c1, r1 = int(np.ceil(x1 / f)), int(np.ceil(y1 / f))
            out[b, 0, max(r0, 0) : min(r1, grid), max(c0, 0) : min(c1, grid)] = 1
    return out


def foreground_weights(boxes: torch.Tensor, mask: torch.Tensor, size: int, grid: int, fg_weight: float):
    """ODGEN's loss weights on the latent grid: ``fg_weight`` inside the boxes, 1 outside."""
    return 1 + (float(fg_weight) - 1) * box_mask(boxes, mask, size, grid)


class ImageListEncoder(nn.Module):
    """``(B, N, 3, H, W)`` canvases + ``(B, N)`` mask -> ``(B, 3, H, W)`` hint: sum over valid canvases of
    ``canvas + conv(SiLU(conv(canvas)))`` (shared weights, last conv zero-initialised)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, canvases: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n = canvases.shape[:2]
        x = canvases.flatten(0, 1).to(self.conv_in.weight.dtype)
        y = x + self.conv_out(nn.functional.silu(self.conv_in(x)))
        y = y.view(b, n, *y.shape[1:]) * mask.to(y.dtype)[:, :, None, None, None]
        return y.sum(1)


class TextListEncoder(nn.Module):
    """``(B, N, text_dim)`` pooled text embeddings + ``(B, N)`` mask -> ``(B, N, out_dim)`` context tokens."""

    def __init__(self, text_dim: int, out_dim: int, n: int, width: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(text_dim, width), nn.SiLU(), nn.Linear(width, out_dim))
        self.slot = nn.Parameter(torch.zeros(n, out_dim))
        self.null = nn.Parameter(torch.zeros(out_dim))
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, texts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dtype = self.mlp[0].weight.dtype
        m = mask.to(dtype)[..., None]
        tokens = self.mlp(texts.to(dtype)) * m + self.null * (1 - m)
        return self.norm(tokens + self.slot[: texts.shape[1]])
