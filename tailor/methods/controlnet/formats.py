"""ControlNet files of the ecosystem (Zhang et al. 2023): diffusers folders and the original ``control_model.*``
layout.

- diffusers: ``<dir>/config.json`` + ``diffusion_pytorch_model.safetensors`` with keys ``controlnet_cond_embedding.*``,
  ``down_blocks.*``, ``controlnet_down_blocks.N``, ``controlnet_mid_block`` (``ControlNetModel.save_pretrained``).
- original (lllyasviel/ControlNet, ``cldm``): ``control_model.`` + ``input_hint_block.<i>`` (hint convs at even
  indices, the last one the zero conv out), ``input_blocks.<i>.<j>`` (the encoder copy, LDM names), ``middle_block``,
  ``zero_convs.<i>.0``, ``middle_block_out.0``, ``time_embed``; standalone files omit the ``control_model.`` prefix.

:func:`diffusers_to_original` names every diffusers key of a given ControlNet in the original layout; loading inverts
it, so a file that does not fit the base (other depth, other hint encoder) fails with a clear message.
"""

from __future__ import annotations

import re

import torch

from tailor.errors import FormatError

ORIGINAL_PREFIX = "control_model."
_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest == new or rest.startswith(new + "."):
            return old + rest[len(new) :]
    raise KeyError(rest)


def diffusers_to_original(keys: list[str], layers_per_block: int, num_hint_blocks: int) -> dict[str, str]:
    """diffusers key -> original (cldm) key, without the ``control_model.`` prefix."""
    lpb = layers_per_block
    out = {}
    for k in keys:
        m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", k)
        if m:
            b, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            i = 1 + b * (lpb + 1) + layer
            out[k] = f"input_blocks.{i}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{i}.1.{rest}"
            continue
        m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k)
        if m:
            out[k] = f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
            continue
        m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", k)
        if m:
            if m[1] == "resnets":
                out[k] = f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}"
            else:
                out[k] = f"middle_block.1.{m[3]}"
            continue
        m = re.match(r"controlnet_down_blocks\.(\d+)\.(.+)", k)
        if m:
            out[k] = f"zero_convs.{m[1]}.0.{m[2]}"
            continue
        m = re.match(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.(.+)", k)
        if m:
            idx = 0 if m[1] == "conv_in" else 2 * (num_hint_blocks + 1) if m[1] == "conv_out" else 2 * (int(m[2]) + 1)
            out[k] = f"input_hint_block.{idx}.{m[3]}"
            continue
        fixed = {
            "conv_in.": "input_blocks.0.0.",
            "controlnet_mid_block.": "middle_block_out.0.",
            "time_embedding.linear_1.": "time_embed.0.",
            "time_embedding.linear_2.": "time_embed.2.",
            "add_embedding.linear_1.": "label_emb.0.0.",
            "add_embedding.linear_2.": "label_emb.0.2.",
        }
        for new, old in fixed.items():
            if k.startswith(new):
                out[k] = old + k[len(new) :]
                break
        else:
            raise FormatError(f"no original-layout name for ControlNet key {k}")
    return out


def is_original(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(ORIGINAL_PREFIX + "input_hint_block.") or k.startswith("input_hint_block.") for k in state)


def strip_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ControlNet part of an original file, without the ``control_model.`` prefix."""
    if any(k.startswith(ORIGINAL_PREFIX) for k in state):
        return {k[len(ORIGINAL_PREFIX) :]: v for k, v in state.items() if k.startswith(ORIGINAL_PREFIX)}
    return dict(state)


def hint_channels_of(original: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The hint encoder widths of an original file (out widths of the first conv and of each stride-2 conv)."""
    idx = sorted(
        {int(k.split(".")[1]) for k in original if k.startswith("input_hint_block.") and k.endswith("weight")}
    )
    if len(idx) < 2 or len(idx) % 2:
        raise FormatError("the original ControlNet's input_hint_block has an unexpected structure.")
    convs = idx[:-1]  # the last conv is the zero conv into the UNet width
    chans = [original[f"input_hint_block.{convs[0]}.weight"].shape[0]]
    chans += [original[f"input_hint_block.{i}.weight"].shape[0] for i in convs[2::2]]
    return tuple(int(c) for c in chans)


def original_from_diffusers(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """A diffusers ControlNet state dict in the original layout (with the ``control_model.`` prefix)."""
    n_hint = len({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    names = diffusers_to_original(list(state), layers_per_block, n_hint)
    return {ORIGINAL_PREFIX + names[k]: v for k, v in state.items()}


def diffusers_from_original(original: dict[str, torch.Tensor], diffusers_keys: list[str], layers_per_block: int):
    """Rename an original-layout state dict (prefix stripped) to the given ControlNet's diffusers keys."""
    n_hint = len({k.split(".")[2] for k in diffusers_keys if k.startswith("controlnet_cond_embedding.blocks.")})
    names = diffusers_to_original(diffusers_keys, layers_per_block, n_hint)
    missing = [old for old in names.values() if old not in original]
    if missing:
        raise FormatError(
            f"the original-layout ControlNet lacks {len(missing)} tensors this base needs (e.g. "
            f"{missing[0]}); it was made for another base model."
        )
    used = set(names.values())
    extra = [k for k in original if k not in used]
    if extra:
        raise FormatError(
            f"the original-layout ControlNet has {len(extra)} tensors this base does not (e.g. "
            f"{extra[0]}); it was made for another base model."
        )
    return {new: original[old] for new, old in names.items()}
