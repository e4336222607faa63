"""Control-GPT's grounding tokens (Zhang et al. 2023): one token per object from its name and its box.

The paper adds ``{object_name, object_position}`` grounding tokens to the ControlNet's input and fuses them with the
sketch by attention. As in GLIGEN (Li et al. 2023, ``PositionNet``), which Control-GPT's grounding follows, each
token is an MLP of [the name's text-encoder embedding, Fourier features of the box]; padded slots use learned null
features, so a batch of scenes with 1-3 objects is one tensor of ``max_objects`` tokens.
"""

from __future__ import annotations

import torch
from torch import nn


def fourier_boxes(boxes: torch.Tensor, freqs: int, temperature: float = 100.0) -> torch.Tensor:
    """(..., 4) boxes in [0, 1] -> (..., 8 * freqs): GLIGEN's ``FourierEmbedder`` (for each frequency
    ``temperature ** (k / freqs)``: sin then cos of all four coordinates)."""
    bands = temperature ** (torch.arange(freqs, dtype=torch.float32, device=boxes.device) / freqs)
    x = boxes.float()[..., None, :] * bands[:, None]  # (..., F, 4)
    out = torch.stack([torch.sin(x), torch.cos(x)], dim=-2)  # (..., F, 2, 4)
    return out.flatten(-3)


class GroundingNet(nn.Module):
    """[name embedding (text_dim), Fourier(box) (8 * freqs)] -> MLP -> a context token (out_dim)."""

    def __init__(self, text_dim: int, out_dim: int, freqs: int = 8, width: int = 128):
        super().__init__()
        self.freqs = int(freqs)
        box_dim = 8 * self.freqs
        self.null_name = nn.Parameter(torch.zeros(text_dim))
        self.null_box = nn.Parameter(torch.zeros(box_dim))
        self.mlp = nn.Sequential(
            nn.Linear(text_dim + box_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, out_dim),
        )  # fmt: skip

    def forward(self, names: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``names`` (B, N, text_dim), ``boxes`` (B, N, 4) in [0, 1], ``mask`` (B, N) 1 = a real object."""
        dtype = self.mlp[0].weight.dtype
        m = mask.to(dtype)[..., None]
        names = names.to(dtype) * m + self.null_name * (1 - m)
        box = fourier_boxes(boxes, self.freqs).to(dtype) * m + self.null_box * (1 - m)
        return self.mlp(torch.cat([names, box], dim=-1))
