"""The official AnyText checkpoint's layout (tyxsspa/AnyText ``anytext_v1.x.ckpt``, ``cldm/cldm.py``,
``cldm/embedding_manager.py``) <-> tailor's keys.

Official groups read and written here:

- ``control_model.glyph_block.<i>.*`` / ``control_model.position_block.<i>.*`` / ``control_model.fuse_block.*``:
  the auxiliary latent module (convs at the same Sequential indices as tailor's, SiLU in between) ->
  ``anytext.control.controlnet_cond_embedding.{glyph_block,position_block,fuse_block}.*``;
- ``control_model.{input_blocks,middle_block,time_embed}.*`` (the ControlNet's copy of the UNet encoder, LDM names),
  ``control_model.zero_convs.<i>.0.*`` and ``control_model.middle_block_out.0.*`` -> the diffusers ControlNet's
  ``down_blocks`` / ``mid_block`` / ``time_embedding`` / ``conv_in`` (named by core's LDM namer of the base UNet),
  ``controlnet_down_blocks.<i>.*`` and ``controlnet_mid_block.*``;
- ``embedding_manager.proj.{0,1}.*`` (zero-initialised Linear(2560 -> 768) + LayerNorm on SD1.5) ->
  ``anytext.embedding.proj.{0,1}.*``.

A full official checkpoint also holds the UNet, VAE and text encoder (``model.diffusion_model.*`` ...): those are
the base's business and are ignored here. The recognizer (PP-OCRv3) is a separate official file, not read: an
official file's projection expects its 2560 features, so it fits a base only with a recognizer of that width.
"""

from __future__ import annotations

import re

import torch

from tailor.errors import FormatError

CONTROL = "control_model."
EMBEDDING = "embedding_manager."
_AUX = ("glyph_block.", "position_block.", "fuse_block.")


def is_official(state) -> bool:
    return any(k.startswith((CONTROL + "glyph_block.", EMBEDDING + "proj.")) for k in state)


def _control_name(key: str, namer) -> str:
    """A diffusers ControlNet key (the trunk, zero convs, auxiliary module) -> its official name (no prefix)."""
    if key.startswith("controlnet_cond_embedding."):
        rest = key[len("controlnet_cond_embedding.") :]
        if rest.startswith(_AUX):
            return rest
        raise FormatError(f"anytext ControlNet key {key} has no official name.")
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(weight|bias)", key):
        return f"zero_convs.{m[1]}.0.{m[2]}"
    if m := re.fullmatch(r"controlnet_mid_block\.(weight|bias)", key):
        return f"middle_block_out.0.{m[1]}"
    module, _, param = key.rpartition(".")
    return f"{namer(module)}.{param}"


def official_names(method, unet) -> dict[str, str]:
    """tailor key -> official key, for every ControlNet and embedding tensor of a built ``method``."""
    from tailor.core.single_file import unet_ldm_namer

    namer = unet_ldm_namer(unet)
    out = {f"anytext.control.{k}": CONTROL + _control_name(k, namer) for k in method.control.state_dict()}
    out |= {f"anytext.embedding.{k}": EMBEDDING + k for k in method.embedding.state_dict()}
    return out


def from_official(state: dict[str, torch.Tensor], method, unet) -> dict[str, torch.Tensor]:
    """Official tensors -> tailor keys (the base gives the trunk's names); one sentence when a group is missing."""
    names = official_names(method, unet)
    missing = [old for old in names.values() if old not in state]
    if missing:
        group = next((g.rstrip(".") for g in _AUX if missing[0].startswith(CONTROL + g)), missing[0])
        raise FormatError(
            f"the official AnyText file lacks {len(missing)} tensors this base needs (e.g. {missing[0]}, group "
            f"{group}); it was made for another base model or is incomplete."
        )
    own = {**method.control.state_dict(), **method.embedding.state_dict()}
    for new, old in names.items():
        short = new.split(".", 2)[2]
        if short in own and own[short].shape != state[old].shape:
            raise FormatError(
                f"official AnyText tensor {old} has shape {tuple(state[old].shape)} but this base needs "
                f"{tuple(own[short].shape)}; it was made for another base model (or another recognizer width)."
            )
    return {new: state[old] for new, old in names.items()}


def to_official(method) -> dict[str, torch.Tensor]:
    """The method's ControlNet and embedding projection under official names (``control_model.*``,
    ``embedding_manager.proj.*``)."""
    names = official_names(method, method.components.unet)
    state = method.state_dict()
    return {old: state[new].detach().contiguous() for new, old in names.items()}
