"""Export :class:`~tailor.core.components.Components` to an original-LDM single-file checkpoint.

This writes the layout of the original CompVis / Stability ``ldm`` and ``sgm`` code bases, which AUTOMATIC1111,
ComfyUI and diffusers' ``from_single_file`` read:

- UNet under ``model.diffusion_model.`` (``input_blocks`` / ``middle_block`` / ``output_blocks`` / ``time_embed`` /
  ``label_emb`` / ``out``),
- VAE under ``first_stage_model.`` (``encoder.down.N.block.M`` / ``mid.block_K`` / ``mid.attn_1.{q,k,v,proj_out}`` as
  1x1 convolutions / ``quant_conv`` ...),
- SD1.x text encoder (OpenAI CLIP layout) under ``cond_stage_model.transformer.text_model.``; SD2-style encoders
  (OpenCLIP: GELU, no projection) under ``cond_stage_model.model.``,
- SDXL: ``conditioner.embedders.0.transformer.text_model.`` (CLIP-L layout) and ``conditioner.embedders.1.model.``
  (OpenCLIP layout: ``transformer.resblocks.N`` with a fused ``attn.in_proj_weight``, ``text_projection`` stored
  transposed).

It is the inverse of diffusers' ``loaders/single_file_utils.py`` conversions, written generically over the number of
blocks, ``layers_per_block`` and attention layers read from the model configs, so the tiny test models (two blocks,
one layer each) round-trip exactly like SD's four blocks of two. A key with no LDM equivalent raises
:class:`~tailor.errors.IncompatibleError` instead of being dropped silently.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from tailor.errors import IncompatibleError, InputError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD_CLIP_PREFIX = "cond_stage_model.transformer."
SD_OPEN_CLIP_PREFIX = "cond_stage_model.model."
XL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
XL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

# diffusers name -> LDM name, for the parts whose names are fixed
_UNET_FIXED = {
    "conv_in.": "input_blocks.0.0.",
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "class_embedding.linear_1.": "label_emb.0.0.",
    "class_embedding.linear_2.": "label_emb.0.2.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
# ResBlock sub-layers: diffusers ResnetBlock2D -> LDM ResBlock
_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_ATTN = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
_OPEN_CLIP_FIXED = {
    "embeddings.position_embedding.weight": "positional_embedding",
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
_OPEN_CLIP_LAYER = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}

Tensors = dict[str, torch.Tensor]


def _rename(rest: str, table: dict[str, str], what: str, key: str) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    raise IncompatibleError(f"cannot export {what} weight {key!r}: it has no original-LDM equivalent.")


def _put(out: Tensors, key: str, value: torch.Tensor) -> None:
    if key in out:  # two diffusers weights landing on one LDM name would be a mapping bug, never silent
        raise IncompatibleError(f"two weights map to the LDM key {key!r}; this model layout cannot be exported.")
    out[key] = value


# --------------------------------------------------------------------- UNet
def _unet_layout(config) -> tuple[int, list[bool]]:
    """(layers_per_block, whether each up block has attentions) of a UNet config, as the LDM layout needs them."""
    lpb = config.layers_per_block
    if not isinstance(lpb, int):
        if len(set(lpb)) != 1:
            raise IncompatibleError(f"UNet layers_per_block={list(lpb)} varies by block; the LDM layout needs one.")
        lpb = int(lpb[0])
    return lpb, ["CrossAttn" in t for t in config.up_block_types]


def _ldm_key(key: str, lpb: int, up_has_attn: list[bool]) -> str:
    """One diffusers UNet weight name -> its LDM name (both without prefixes)."""
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        i = 1 + b * (lpb + 1) + j
        if kind == "resnets":
            return f"input_blocks.{i}.0." + _rename(rest, _UNET_RESNET, "UNet", key)
        return f"input_blocks.{i}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * (lpb + 1) + lpb}.0.op.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        i = b * (lpb + 1) + j
        if kind == "resnets":
            return f"output_blocks.{i}.0." + _rename(rest, _UNET_RESNET, "UNet", key)
        return f"output_blocks.{i}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b = int(m[1])
        # the Upsample module follows the last ResBlock, after its SpatialTransformer when there is one
        return f"output_blocks.{b * (lpb + 1) + lpb}.{2 if up_has_attn[b] else 1}.conv.{m[2]}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        kind, k, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":  # middle_block is ResBlock, SpatialTransformer, ResBlock
            return f"middle_block.{2 * k}." + _rename(rest, _UNET_RESNET, "UNet", key)
        return f"middle_block.{2 * k + 1}.{rest}"
    return _rename(key, _UNET_FIXED, "UNet", key)


def _check_blocks(unet, lpb: int) -> None:
    for b, block in enumerate(unet.down_blocks):
        if len(block.resnets) != lpb:
            raise IncompatibleError(f"UNet down block {b} has {len(block.resnets)} resnets, expected {lpb}.")
    for b, block in enumerate(unet.up_blocks):
        if len(block.resnets) != lpb + 1:
            raise IncompatibleError(f"UNet up block {b} has {len(block.resnets)} resnets, expected {lpb + 1}.")


def unet_ldm_namer(unet):
    """A function from a diffusers UNet module path (``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``)
    to the original layout's (``input_blocks.4.1.transformer_blocks.0.attn1.to_q``), for SD1.x/SD2 and SDXL alike;
    kohya LoRA names (:mod:`tailor.methods.lora.formats`) use it. IncompatibleError for a UNet or path without one."""
    lpb, up_has_attn = _unet_layout(unet.config)
    _check_blocks(unet, lpb)

    def name(path: str) -> str:
        return _ldm_key(path + ".weight", lpb, up_has_attn).removesuffix(".weight")

    return name


def unet_to_ldm(unet) -> Tensors:
    """The UNet's weights under LDM names (without the ``model.diffusion_model.`` prefix)."""
    lpb, up_has_attn = _unet_layout(unet.config)
    _check_blocks(unet, lpb)
    out: Tensors = {}
    for key, value in unet.state_dict().items():
        _put(out, _ldm_key(key, lpb, up_has_attn), value)
    return out


# --------------------------------------------------------------------- VAE
def vae_to_ldm(vae) -> Tensors:
    """The VAE's weights under LDM names (without the ``first_stage_model.`` prefix)."""
    n_up = len(vae.decoder.up_blocks)
    out: Tensors = {}
    for key, value in vae.state_dict().items():
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            # LDM numbers decoder levels from the highest resolution; diffusers from the lowest
            new = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            new = f"{m[1]}.mid.attn_1." + _rename(m[2], _VAE_ATTN, "VAE", key)
            if value.ndim == 2:  # LDM's AttnBlock uses 1x1 convolutions where diffusers uses Linear
                value = value[:, :, None, None]
        elif m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
            new = f"{m[1]}.norm_out.{m[2]}"
        elif re.fullmatch(r"(encoder\.|decoder\.)?(conv_in|conv_out|quant_conv|post_quant_conv)\.[a-z]+", key):
            new = key
        else:
            raise IncompatibleError(f"cannot export VAE weight {key!r}: it has no original-LDM equivalent.")
        _put(out, new, value)
    return out


# --------------------------------------------------------------------- text encoders
def _text_state(text_encoder) -> Tensors:
    """State dict without the ``text_model.`` wrapper prefix (transformers >= 5.6 flattened CLIPTextModel)."""
    return {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}


def clip_to_ldm(text_encoder) -> Tensors:
    """OpenAI-CLIP layout (transformers's own names under ``text_model.``), to go under a ``.transformer.`` prefix."""
    out: Tensors = {}
    for key, value in _text_state(text_encoder).items():
        _put(out, key if key.startswith("text_projection.") else f"text_model.{key}", value)
    return out


def open_clip_to_ldm(text_encoder) -> Tensors:
    """OpenCLIP layout: ``transformer.resblocks.N`` with fused q/k/v ``in_proj``, ``text_projection`` as ``x @ P``."""
    state = _text_state(text_encoder)
    out: Tensors = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in _OPEN_CLIP_FIXED:
            _put(out, _OPEN_CLIP_FIXED[key], value)
        elif key == "text_projection.weight":  # nn.Linear weight is (proj, width); OpenCLIP stores (width, proj)
            _put(out, "text_projection", value.T.contiguous())
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", key):
            qkv.setdefault((int(m[1]), m[3]), {})[m[2]] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key):
            new = _rename(m[2], _OPEN_CLIP_LAYER, "text encoder", key)
            _put(out, f"transformer.resblocks.{m[1]}.{new}", value)
        else:
            raise IncompatibleError(f"cannot export text-encoder weight {key!r}: it has no OpenCLIP equivalent.")
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise IncompatibleError(f"text encoder layer {layer} lacks one of q/k/v {kind}; cannot fuse in_proj.")
        _put(
            out,
            f"transformer.resblocks.{layer}.attn.in_proj_{kind}",
            torch.cat([parts["q"], parts["k"], parts["v"]], dim=0),
        )
    return out


def _is_open_clip_style(text_encoder) -> bool:
    # SD2's OpenCLIP ViT-H text tower uses plain GELU; OpenAI CLIP (SD1.x) uses quick_gelu. diffusers' importer
    # drops OpenCLIP block 23 (SD2 runs on the penultimate layer), so a 24+ layer GELU tower keeps the CLIP layout.
    cfg = text_encoder.config
    return cfg.hidden_act == "gelu" and cfg.num_hidden_layers <= 23


# --------------------------------------------------------------------- whole checkpoint
def to_ldm_state_dict(components) -> Tensors:
    """All of ``components``' weights under original single-file names, with their component prefixes."""
    out: Tensors = {}

    def add(prefix: str, part: Tensors) -> None:
        for k, v in part.items():
            _put(out, prefix + k, v)

    add(UNET_PREFIX, unet_to_ldm(components.unet))
    add(VAE_PREFIX, vae_to_ldm(components.vae))
    if components.is_sdxl:
        if components.text_encoder.config.hidden_size == components.text_encoder_2.config.hidden_size:
            # diffusers tells SDXL's two encoders apart by width only; equal widths would load encoder 1 twice
            raise IncompatibleError(
                "SDXL text encoders of equal width cannot be told apart in a single file; "
                "save a diffusers folder instead."
            )
        add(XL_CLIP_PREFIX, clip_to_ldm(components.text_encoder))
        add(XL_OPEN_CLIP_PREFIX, open_clip_to_ldm(components.text_encoder_2))
    elif _is_open_clip_style(components.text_encoder):
        add(SD_OPEN_CLIP_PREFIX, open_clip_to_ldm(components.text_encoder))
    else:
        add(SD_CLIP_PREFIX, clip_to_ldm(components.text_encoder))
    return out


def save_single_file(components, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``components`` as one original-layout ``.safetensors`` checkpoint (atomically) and return its path.

    Read it back with ``load_components(path, config=<diffusers folder of the same architecture>)``, or load it in
    AUTOMATIC1111 / ComfyUI. Tokenizers and the scheduler are not stored, as in every original checkpoint.
    """
    from tailor.core.io import save_tensors

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"{path}: single-file checkpoints are written as .safetensors; change the suffix.")
    meta: dict[str, Any] = {"format": "pt", "layout": "ldm", "architecture": "sdxl" if components.is_sdxl else "sd"}
    if components.source:
        meta["base"] = components.source
    meta.update(metadata or {})
    save_tensors(path, to_ldm_state_dict(components), meta)
    return path
