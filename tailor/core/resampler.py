"""Image-prompt projections shared by the decoupled-attention adapters (IP-Adapter, Ye et al. 2023; InstantID,
Wang et al. 2024; PuLID, Guo et al. 2024); their names in the official IP-Adapter files are the ``ip_adapter``
method's (``tailor/methods/ip_adapter/formats.py``).

The modules are diffusers' own, so diffusers' ``load_ip_adapter`` builds the same thing from our files:
``ImageProjection`` (Linear(d -> T * cad), reshape to T tokens, LayerNorm) and ``IPAdapterPlusImageProjection``
(the Perceiver resampler: T learned latents, 4 layers, dim_head 64, heads = width / 64, feed-forward x4), which is
also InstantID's face-embedding Resampler (its input is a sequence of one face embedding).
"""

from __future__ import annotations

import torch


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
