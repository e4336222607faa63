"""Infinite-ID's pieces (Wu et al. 2024): the ID encoder (face embedding + CLIP image embedding -> ID tokens), the
AdaIN-mean operation, the mixed self-attention the text stream runs over the ID stream's keys / values, and the
training data (another render of the item's identity as the reference).

Mixed attention (the paper's feature interaction): in every self-attention layer the text stream's queries attend to
the keys / values of both streams, ``Attn(Q_t, [K_i; K_t], [V_i; V_t])``; with AdaIN-mean the text stream's queries
and keys first take the ID stream's mean, ``AdaIN-m(x, y) = x - mu(x) + mu(y)`` (mean over the tokens, per channel),
as StyleAligned (Hertz et al. 2024) does with full AdaIN between a reference and a target. The ID stream keeps its own
self-attention (its rows run in front of the batch through the reference bank, :mod:`tailor.core.reference_bank`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from tailor.core.resampler import make_projection


def adain_mean(x: torch.Tensor, y: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """``x - mu(x) + mu(y)``: ``x`` with the mean of ``y`` over ``dim`` (the tokens), its spread kept (the paper's
    AdaIN-mean; full AdaIN would also take ``y``'s standard deviation)."""
    return x - x.mean(dim, keepdim=True) + y.mean(dim, keepdim=True)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def mixed_attention(attn, hidden_states: torch.Tensor, id_states: torch.Tensor, extra: list[torch.Tensor],
                    adain: bool) -> torch.Tensor:  # fmt: skip
    """One self-attention layer (diffusers ``Attention``, self-attention form) for the text stream's rows
    ``hidden_states`` (B, N, C) over its own and the ID stream's ``id_states`` (B, M, C) keys / values (plus ``extra``
    features of other reference banks, keys / values as they are); ``adain``: the text stream's queries and keys
    take the ID stream's mean first."""
    if hidden_states.ndim != 3 or attn.group_norm is not None or attn.spatial_norm is not None:
        raise RuntimeError("Infinite-ID's mixed attention reads (batch, tokens, channels) self-attention layers only.")
    residual = hidden_states
    q, k_t, v_t = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    k_i, v_i = attn.to_k(id_states), attn.to_v(id_states)
    if adain:
        q = adain_mean(q, attn.to_q(id_states))
        k_t = adain_mean(k_t, k_i)
    keys = torch.cat([k_i, k_t, *(attn.to_k(e) for e in extra)], dim=1)
    values = torch.cat([v_i, v_t, *(attn.to_v(e) for e in extra)], dim=1)
    if getattr(attn, "norm_q", None) is not None or getattr(attn, "norm_k", None) is not None:
        raise RuntimeError("Infinite-ID's mixed attention does not read attention layers with query / key norms.")
    h = attn.heads
    out = F.scaled_dot_product_attention(_heads(q, h), _heads(keys, h), _heads(values, h))
    out = out.transpose(1, 2).reshape(hidden_states.shape[0], -1, q.shape[-1]).to(q.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class IDEncoder(nn.Module):
    """Face embedding (B, D) -> ``num_tokens`` Resampler tokens, CLIP image embedding (B, E) -> ``clip_tokens``
    tokens (linear + LayerNorm, IP-Adapter's projection); the ID tokens are both, face tokens first."""

    def __init__(self, face_dim: int, clip_dim: int, width: int, num_tokens: int, clip_tokens: int, depth: int,
                 resampler_width: int = 0, heads: int = 0):  # fmt: skip
        super().__init__()
        self.face = make_projection(True, face_dim, width, num_tokens, depth, resampler_width, heads)
        self.clip = make_projection(False, clip_dim, width, clip_tokens)
        self.face_dim, self.clip_dim = int(face_dim), int(clip_dim)

    def forward(self, face: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.face(face[:, None]), self.clip(clip)], dim=1)


class IDPairs(Dataset):
    """World-face items with ``id_pixel_values`` (another render of the same identity: other pose, light,
    background, as the reference) and ``face_embedding`` of that reference (the conditioning face embedder's);
    items that are not world faces use themselves."""

    def __init__(self, dataset: Dataset, embedder: str | None = None):
        from tailor.faces.embedders import face_embedder
        from tailor.faces.inputs import SameIdentityDataset

        self.dataset = SameIdentityDataset(dataset)
        self.model = face_embedder(embedder)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        ref = item.get("id_pixel_values", item["pixel_values"])
        x = (ref.float()[None].clamp(-1, 1) + 1) / 2
        kps = None
        with torch.no_grad():
            if self.model.aligned:  # the reference's keypoints: the world keypoint detector
                from tailor.faces.models import keypoint_detector

                pts, _ = keypoint_detector()(x)
                kps = (pts[0, :5] * torch.tensor([x.shape[-1], x.shape[-2]]))[None].numpy()
            item["face_embedding"] = self.model.embed(x, kps)[0]
        item["id_pixel_values"] = ref
        return item
