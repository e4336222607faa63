"""PhotoVerse pieces (Chen et al. 2023): the two adapters, the image branch's low-rank K / V, the loss terms.

- :class:`Adapters`: the class tokens of several CLIP vision layers, concatenated (the paper's multi-layer
  features) -> ``text`` MLP -> one pseudo-word in the text encoder's input width; -> ``image`` MLP -> ``image_tokens``
  tokens of the cross-attention width (LayerNorm each, IP-Adapter style).
- :class:`LowRankKV`: the image cross-attention's key or value projection = the base layer's frozen ``to_k`` /
  ``to_v`` weight + its own LoRA (``B A``, B zero-initialised): "LoRA on K / V" for the image branch, so the branch
  ships as a few low-rank matrices instead of full copies (the text branch's LoRA is core LoRA on ``attn2.to_k/v``).
- :func:`predicted_clean`: ``x0`` from the UNet's prediction (epsilon or v) at ``t``; :func:`face_id_loss`:
  ``1 - cos`` between embeddings of two image batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, dim_in: int, width: int, dim_out: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.fc1 = nn.Linear(dim_in, width)
        self.fc2 = nn.Linear(width, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class Adapters(nn.Module):
    """Concatenated class tokens ``(B, layers x vision width)`` -> (pseudo-words ``(B, text width)``, image tokens
    ``(B, T, cross-attention width)``)."""

    def __init__(self, dim_in: int, width: int, text_dim: int, ctx_dim: int, tokens: int):
        super().__init__()
        self.tokens, self.ctx_dim = tokens, ctx_dim
        self.text = MLP(dim_in, width, text_dim)
        self.image = MLP(dim_in, width, tokens * ctx_dim)
        self.image_norm = nn.LayerNorm(ctx_dim)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        words = self.text(feats)
        tokens = self.image_norm(self.image(feats).view(feats.shape[0], self.tokens, self.ctx_dim))
        return words, tokens


class LowRankKV(nn.Module):
    """``y = W x + (alpha / r) B A x`` with ``W`` the base layer's weight (held, not owned: not in the state dict)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self._base = [base]  # a list: the base layer is the UNet's, never this module's parameter
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=5**0.5)  # peft's init: A random, B zero
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank
        self.in_features, self.out_features = base.in_features, base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self._base[0].weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._base[0].weight
        return F.linear(x.to(w), w) + self.scaling * self.lora_B(self.lora_A(x.to(self.lora_A.weight))).to(w)


def class_features(encoder, pixels: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """``(B, len(layers) x width)``: the class token of each chosen hidden state of a frozen CLIP vision tower."""
    out = encoder(pixels.to(device=encoder.device, dtype=encoder.dtype), output_hidden_states=True)
    return torch.cat([out.hidden_states[i][:, 0].float() for i in layers], dim=-1)


def vision_layers(num_layers: int, chosen: list[int]) -> list[int]:
    """Hidden-state indices (1..num_layers); default: every layer's output."""
    layers = list(chosen) or list(range(1, num_layers + 1))
    bad = [i for i in layers if not 1 <= i <= num_layers]
    if bad:
        from tailor.errors import ConfigError

        raise ConfigError(f"vision_layers {bad} are outside this image encoder's 1..{num_layers} layers.")
    return layers


def predicted_clean(
    noisy: torch.Tensor, pred: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """``x0`` from the prediction: epsilon ``(x_t - sqrt(1 - a) eps) / sqrt(a)``, v ``sqrt(a) x_t - sqrt(1 - a) v``."""
    a = alphas_cumprod.to(noisy.device, torch.float32)[t.long()].view(-1, 1, 1, 1)
    x, p = noisy.float(), pred.float()
    if prediction_type == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * p
    if prediction_type == "epsilon":
        return (x - (1 - a).sqrt() * p) / a.sqrt()
    raise ValueError(f"PhotoVerse's face loss does not know prediction type {prediction_type!r}")


def face_id_loss(generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between ``(B, D)`` embeddings of the generated images and of their references."""
    return (1 - F.cosine_similarity(generated.float(), reference.float(), dim=-1)).mean()


def clip_input(pixel_values: torch.Tensor, processor) -> torch.Tensor:
    """Images in [-1, 1] ``(B, 3, H, W)`` -> the vision tower input (bilinear resize to its crop, CLIP mean, std)."""
    size = processor.crop_size
    h, w = (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)
    x = (pixel_values.float().clamp(-1, 1) + 1) / 2
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    mean = torch.tensor(processor.image_mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
