"""InstantID pieces (Wang et al. 2024): the face-embedding width, the IdentityNet condition (5 keypoints drawn in
InstantID's style) for sampling and training batches, and the reference-face inputs.

The ID adapter itself is core machinery: the Perceiver Resampler (:func:`tailor.core.resampler.make_projection`,
diffusers' ``IPAdapterPlusImageProjection``; its input is a sequence of one face embedding) and decoupled
cross-attention (:mod:`tailor.core.attention`). IdentityNet is the registered ``controlnet`` method, composed.
"""

from __future__ import annotations

import numpy as np
import torch

from tailor.conditions import keypoints_image


def embedder_width(config) -> int:
    """The face-embedding width: ``embed_dim`` when set, else the conditioning embedder's (from its file)."""
    if config.embed_dim:
        return int(config.embed_dim)
    from tailor.faces.models import conditioning_embedder, embed_dim

    return embed_dim(conditioning_embedder(None if config.face_embedder == "world" else config.face_embedder))


def keypoint_condition(points, size: tuple[int, int]) -> torch.Tensor:
    """(5, 2) pixel points on an image of ``size`` = (width, height) -> float 1x3xHxW in [0, 1]."""
    w, h = size
    img = keypoints_image(np.asarray(points, np.float32), (h, w))
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def batch_condition(keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Training: (B, 5, 2) keypoints at the batch's pixel size -> (B, 3, H, W) keypoint images."""
    return torch.cat([keypoint_condition(k.cpu().numpy(), (width, height)) for k in keypoints])
