"""IC-Light's light-transport consistency loss (Zhang, Rao, Agrawala, ICLR 2025, "imposing consistent light
transport").

Light adds linearly: an image under lights ``A`` and ``B`` together is the sum of the images under each,
``I(A + B) = I(A) + I(B)`` in linear RGB. Latents are not linear in light, so the paper merges the two predictions
with a small learned network and asks the merge to match the prediction under both lights, on the foreground.

Here the three rows of a lit triplet (:mod:`.data`) share their noise and timestep; each prediction is turned into
the clean latents it implies (``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)`` for epsilon, ``sqrt(a) x_t - sqrt(1 - a) v``
for v-prediction), where the light lives (epsilon-predictions of the three rows are nearly the same noise). The
combiner maps each to a learned per-pixel feature space, sums there (the linear sum of the two lights) and maps back:
``phi(a, b) = g(h(a) + h(b))`` (``h``, ``g``: two 1x1-convolution layers each, :class:`Combiner`). The loss of a
triplet is ``abar_t * sum(m (phi(x0_A, x0_B) - x0_AB)^2) / (C sum(m))`` with ``m`` the foreground mask at latent
size (area-averaged); the ``abar_t`` weight keeps it on the epsilon loss's scale at high noise (an x0 error there is
an epsilon error times ``sqrt(1 - abar) / sqrt(abar)``). Gradients reach all three predictions and the combiner.
Triplets whose caption was dropped (classifier-free training rows) are left out for fc, whose light is the text.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tailor.errors import ConfigError


class Combiner(nn.Module):
    """``phi(a, b) = g(h(a) + h(b))``: per-pixel MLPs (1x1 convolutions) into a feature space where lights add."""

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.h = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, hidden, 1))
        self.g = nn.Sequential(nn.Conv2d(hidden, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.g(self.h(a) + self.h(b))


def predicted_clean(noisy: torch.Tensor, pred: torch.Tensor, abar: torch.Tensor, kind: str) -> torch.Tensor:
    """The clean latents a prediction implies in one step; ``abar``: alpha-bar per row, shape ``(B,)``."""
    a = abar.float().view(-1, *([1] * (noisy.ndim - 1)))
    if kind == "epsilon":
        return (noisy.float() - (1 - a).sqrt() * pred.float()) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * noisy.float() - (1 - a).sqrt() * pred.float()
    if kind == "sample":
        return pred.float()
    raise ConfigError(f"IC-Light's consistency loss does not know prediction type {kind!r}.")


def consistency_loss(
    x0: torch.Tensor,
    abar: torch.Tensor,
    mask: torch.Tensor,
    n: int,
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the valid triplets of ``abar * sum(m (combine(x0_A, x0_B) - x0_AB)^2) / (C sum(m))``.

    ``x0``: ``[3n, C, h, w]`` rows ``[A..., B..., AB...]``; ``abar``: ``(3n,)`` (the three rows of a triplet share
    it); ``mask``: ``[3n or n, 1, H, W]`` foreground in [0, 1] at any multiple of the latent size; ``valid``: ``(n,)``
    bool (default all)."""
    a, b, ab = x0[:n], x0[n : 2 * n], x0[2 * n : 3 * n]
    m = mask[:n].float()
    if m.shape[-2:] != x0.shape[-2:]:
        m = F.interpolate(m, size=x0.shape[-2:], mode="area")
    err = (combine(a, b) - ab).pow(2) * m
    per = err.sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * x0.shape[1]).clamp(min=1e-8)
    per = per * abar[2 * n : 3 * n].float()
    keep = (m.sum(dim=(1, 2, 3)) > 0) if valid is None else valid.to(per.device) & (m.sum(dim=(1, 2, 3)) > 0)
    if not bool(keep.any()):
        return per.sum() * 0.0
    return per[keep].mean()
