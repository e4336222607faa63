"""InstantID pieces (Wang et al. 2024): the IdentityNet condition (5 keypoints drawn in InstantID's style) for
sampling and training batches.

The ID adapter itself is shared machinery (:class:`tailor.faces.id_adapter.FaceIDMethod`): the Perceiver Resampler
(:func:`tailor.core.resampler.make_projection`, diffusers' ``IPAdapterPlusImageProjection``; its input is a sequence
of one face embedding) and decoupled cross-attention (:mod:`tailor.core.attention`). IdentityNet is the registered
``controlnet`` method, composed.
"""

from __future__ import annotations

import numpy as np
import torch

from tailor.conditions import keypoints_image


def keypoint_condition(points, size: tuple[int, int]) -> torch.Tensor:
    """(5, 2) pixel points on an image of ``size`` = (width, height) -> float 1x3xHxW in [0, 1]."""
    w, h = size
    img = keypoints_image(np.asarray(points, np.float32), (h, w))
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def batch_condition(keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Training: (B, 5, 2) keypoints at the batch's pixel size -> (B, 3, H, W) keypoint images."""
    return torch.cat([keypoint_condition(k.cpu().numpy(), (width, height)) for k in keypoints])
