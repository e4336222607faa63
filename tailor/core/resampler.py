"""Image-prompt projections shared by the decoupled-attention adapters (IP-Adapter, Ye et al. 2023; InstantID,
Wang et al. 2024; PuLID, Guo et al. 2024) and their names in the official IP-Adapter files.

The modules are diffusers' own, so diffusers' ``load_ip_adapter`` builds the same thing from our files:
``ImageProjection`` (Linear(d -> T * cad), reshape to T tokens, LayerNorm) and ``IPAdapterPlusImageProjection``
(the Perceiver resampler: T learned latents, 4 layers, dim_head 64, heads = width / 64, feed-forward x4), which is
also InstantID's face-embedding Resampler (its input is a sequence of one face embedding). The files keep the
original repository's names (plain: ``proj.*``, ``norm.*``; resampler: ``latents``, ``proj_in``, ``proj_out``,
``norm_out``, ``layers.<i>.0.{norm1,norm2,to_q,to_kv,to_out}``, ``layers.<i>.1.{0,1,3}``).
"""

from __future__ import annotations

import re

import torch

from tailor.errors import FormatError


def make_projection(
    plus: bool, embed_dim: int, cross_attention_dim: int, num_tokens: int, depth: int = 4
) -> torch.nn.Module:
    from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection

    if not plus:
        return ImageProjection(image_embed_dim=embed_dim, cross_attention_dim=cross_attention_dim,
                               num_image_text_embeds=num_tokens)  # fmt: skip
    return IPAdapterPlusImageProjection(embed_dims=embed_dim, output_dims=cross_attention_dim,
                                        hidden_dims=cross_attention_dim, depth=depth, dim_head=64,
                                        heads=max(1, cross_attention_dim // 64), num_queries=num_tokens,
                                        ffn_ratio=4)  # fmt: skip


PLUS_ATTN = {"ln0": "0.norm1", "ln1": "0.norm2", "attn.to_q": "0.to_q", "attn.to_out.0": "0.to_out",
             "ff.0": "1.0", "ff.1.net.0.proj": "1.1", "ff.1.net.2": "1.3"}  # fmt: skip


def proj_to_official(state: dict[str, torch.Tensor], plus: bool) -> dict[str, torch.Tensor]:
    """diffusers module names -> the original repository's names."""
    out: dict[str, torch.Tensor] = {}
    if not plus:
        for k, v in state.items():
            out[k.replace("image_embeds.", "proj.")] = v
        return out
    for k, v in state.items():
        m = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m is None:
            out[k] = v
            continue
        i, mod, kind = m.groups()
        if mod in ("attn.to_k", "attn.to_v"):
            if mod == "attn.to_k":
                out[f"layers.{i}.0.to_kv.{kind}"] = torch.cat([v, state[f"layers.{i}.attn.to_v.{kind}"]], dim=0)
            continue
        if mod not in PLUS_ATTN:
            raise FormatError(f"unexpected resampler weight {k}")
        out[f"layers.{i}.{PLUS_ATTN[mod]}.{kind}"] = v
    return out


def proj_from_official(state: dict[str, torch.Tensor], plus: bool) -> dict[str, torch.Tensor]:
    """The original names -> diffusers module names (inverse of :func:`proj_to_official`)."""
    out: dict[str, torch.Tensor] = {}
    if not plus:
        for k, v in state.items():
            out[k.replace("proj.", "image_embeds.", 1) if k.startswith("proj.") else k] = v
        return out
    inverse = {v: k for k, v in PLUS_ATTN.items()}
    for k, v in state.items():
        m = re.match(r"layers\.(\d+)\.(\d\.(?:norm1|norm2|to_q|to_kv|to_out|\d))\.(weight|bias)$", k)
        if m is None:
            out[k] = v
            continue
        i, mod, kind = m.groups()
        if mod == "0.to_kv":
            key, value = v.chunk(2, dim=0)
            out[f"layers.{i}.attn.to_k.{kind}"], out[f"layers.{i}.attn.to_v.{kind}"] = key, value
        elif mod in inverse:
            out[f"layers.{i}.{inverse[mod]}.{kind}"] = v
        else:
            raise FormatError(f"unexpected IP-Adapter-Plus resampler weight {k}")
    return out
