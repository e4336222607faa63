"""Image-prompt projections shared by the decoupled-attention adapters (IP-Adapter, Ye et al. 2023; InstantID,
Wang et al. 2024; PuLID, Guo et al. 2024); their names in the official IP-Adapter files are the ``ip_adapter``
method's (``tailor/methods/ip_adapter/formats.py``).

The modules are diffusers' own, so diffusers' ``load_ip_adapter`` builds the same thing from our files:
``ImageProjection`` (Linear(d -> T * cad), reshape to T tokens, LayerNorm) and ``IPAdapterPlusImageProjection``
(the Perceiver resampler: T learned latents of the resampler's own width, ``depth`` layers, heads of 64, feed-forward
x4, ``proj_out`` to the cross-attention width), which is also InstantID's face-embedding Resampler (its input is a
sequence of one face embedding).

The resampler's width is its own: the official SDXL files use 1280 (20 heads) under a 2048-wide cross-attention, the
SD1.5 ones 768 (12 heads). ``width = 0`` keeps tailor's default, the base's cross-attention width (so files trained
before the option existed build the same module); :func:`resampler_sizes` reads every size back from a file's
weights, as diffusers' loader does.
"""

from __future__ import annotations

import re

import torch

from tailor.errors import FormatError

DIM_HEAD = 64  # the resampler's head width (the official code's and diffusers' loader's, which assumes it)


def make_projection(
    plus: bool,
    embed_dim: int,
    cross_attention_dim: int,
    num_tokens: int,
    depth: int = 4,
    width: int = 0,
    heads: int = 0,
) -> torch.nn.Module:
    """The plain projection or (``plus``) the resampler; ``width`` 0 = the cross-attention width, ``heads`` 0 =
    width / 64 (at least 1)."""
    from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection

    if not plus:
        return ImageProjection(image_embed_dim=embed_dim, cross_attention_dim=cross_attention_dim,
                               num_image_text_embeds=num_tokens)  # fmt: skip
    width = int(width) or cross_attention_dim
    heads = int(heads) or max(1, width // DIM_HEAD)
    return IPAdapterPlusImageProjection(embed_dims=embed_dim, output_dims=cross_attention_dim, hidden_dims=width,
                                        depth=depth, dim_head=DIM_HEAD, heads=heads, num_queries=num_tokens,
                                        ffn_ratio=4)  # fmt: skip


def resampler_sizes(image_proj: dict[str, torch.Tensor], source: str = "the file") -> dict[str, int]:
    """A Plus resampler's sizes from its weights in the official layout (``image_proj.`` removed): ``embed_dim``
    (input), ``width`` (latents), ``heads`` (to_q rows / 64), ``depth`` (layers), ``num_tokens`` (queries) and
    ``output`` (proj_out rows, the cross-attention width); diffusers' loader reads the same shapes."""
    try:
        latents, proj_in, proj_out = image_proj["latents"], image_proj["proj_in.weight"], image_proj["proj_out.weight"]
        to_q = image_proj["layers.0.0.to_q.weight"]
        sizes = {"embed_dim": int(proj_in.shape[1]), "width": int(latents.shape[2]),
                 "num_tokens": int(latents.shape[1]), "heads": int(to_q.shape[0]) // DIM_HEAD,
                 "output": int(proj_out.shape[0])}  # fmt: skip
    except (KeyError, IndexError) as e:
        raise FormatError(f"{source}'s resampler (image_proj.*) lacks or misshapes {e}; the file is damaged or not an "
                          f"IP-Adapter-Plus / InstantID file.") from e  # fmt: skip
    layers = {int(m.group(1)) for k in image_proj if (m := re.match(r"layers\.(\d+)\.", k))}
    sizes["depth"] = max(layers) + 1
    if sizes["heads"] < 1 or int(to_q.shape[0]) % DIM_HEAD:
        raise FormatError(f"{source}'s resampler has {int(to_q.shape[0])} attention channels, not a multiple of "
                          f"{DIM_HEAD}; only heads of {DIM_HEAD} (the official layout) are read.")  # fmt: skip
    return sizes


def check_options(config) -> None:
    """The resampler options of a config (``resampler_width``, ``resampler_heads``, ``resampler_depth``)."""
    c, w, h = config.check, config.resampler_width, config.resampler_heads
    c(w >= 0, f"resampler_width must be 0 (the base's cross-attention width) or positive; got {w}.")
    c(h >= 0, f"resampler_heads must be 0 (width / {DIM_HEAD}) or positive; got {h}.")
    c(config.resampler_depth >= 1, f"resampler_depth must be at least 1; got {config.resampler_depth}.")
