"""The official AnyDoor checkpoint layout (ali-vilab/AnyDoor, ``cldm.cldm.ControlLDM`` state dict):

- ``model.diffusion_model.*``: the whole UNet in the original LDM layout (``input_blocks`` / ``middle_block`` /
  ``output_blocks`` / ``out``); AnyDoor trains its decoder (``output_blocks``, ``out``), the rest is the base's,
- ``control_model.*``: the detail ControlNet in the original ControlNet layout (``input_hint_block`` with 4 input
  channels, ``zero_convs``, ``middle_block_out``),
- ``cond_stage_model.projector.{weight,bias}``: the Linear from the image encoder's width to the context width
  (the file also holds the frozen DINOv2 as ``cond_stage_model.model.*``, which tailor does not read: its ID tower
  is the named ``image_encoder``).

:func:`to_official` writes that layout (a decoder LoRA merged into the UNet's weights: W + (alpha/r) B A);
:func:`from_official` reads it into tailor's keys for a given base (``projector.*``, ``controlnet.<diffusers key>``,
``unet_decoder.<diffusers key>``). The ControlNet renaming is the ``controlnet`` method's original layout (through
the registry); the UNet's is core's single-file export (:func:`tailor.core.single_file.unet_ldm_namer`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tailor.core.lora_math import delta_weight
from tailor.core.method import get_spec
from tailor.core.single_file import UNET_PREFIX, unet_ldm_namer
from tailor.errors import FormatError

PROJECTOR = "cond_stage_model.projector."
CONTROL = "control_model."
DECODER = ("up_blocks.", "conv_norm_out.", "conv_out.")


def _layout():
    return get_spec("controlnet").method.file_layout()


def is_official(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(PROJECTOR) for k in state) and any(k.startswith(CONTROL) for k in state)


def sniff(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
        return False
    return any(k.startswith(PROJECTOR) for k in keys) and any(k.startswith(CONTROL) for k in keys)


def _plain_unet_state(unet) -> dict[str, torch.Tensor]:
    """The UNet's own weights by diffusers key (peft wrappers' base layers; adapters left out)."""
    return {k.replace(".base_layer.", "."): v for k, v in unet.state_dict().items() if ".lora_" not in k}


def _ldm_name(namer, key: str) -> str:
    path, _, param = key.rpartition(".")
    return f"{namer(path)}.{param}"


def to_official(projector, controlnet, unet, lora: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The official layout of an attached AnyDoor (``lora``: its canonical decoder LoRA, merged into the UNet)."""
    state = {k: v.detach().clone() for k, v in _plain_unet_state(unet).items()}
    for key in [k for k in (lora or {}) if k.endswith(".lora_A.weight")]:
        mod = key[: -len(".lora_A.weight")]
        a, b = lora[key].float(), lora[f"{mod}.lora_B.weight"].float()
        alpha = float(lora.get(f"{mod}.alpha", torch.tensor(float(a.shape[0]))))
        w = f"{mod.removeprefix('unet.')}.weight"
        state[w] = (state[w].float() + alpha / a.shape[0] * delta_weight(a, b)).to(state[w].dtype)
    namer = unet_ldm_namer(unet)
    out = {UNET_PREFIX + _ldm_name(namer, k): v for k, v in state.items()}
    lpb = int(controlnet.config.layers_per_block)
    out.update(_layout().original_from_diffusers(dict(controlnet.state_dict()), lpb))
    out.update({PROJECTOR + k: v.detach().clone() for k, v in projector.state_dict().items()})
    return out


def from_official(state: dict[str, torch.Tensor], controlnet, unet, vae_factor: int) -> dict[str, torch.Tensor]:
    """tailor's keys for ``state`` (an official checkpoint) on this base: projector, ControlNet, full decoder."""
    out = {f"projector.{k[len(PROJECTOR) :]}": v for k, v in state.items() if k.startswith(PROJECTOR)}
    if set(out) != {"projector.weight", "projector.bias"}:
        raise FormatError("the AnyDoor checkpoint's cond_stage_model.projector lacks its weight or bias.")
    layout = _layout()
    original = layout.strip_original({k: v for k, v in state.items() if k.startswith(CONTROL)})
    keys = list(controlnet.state_dict())
    cn = layout.diffusers_from_original(original, keys, int(controlnet.config.layers_per_block))
    out.update({f"controlnet.{k}": v for k, v in cn.items()})
    namer = unet_ldm_namer(unet)
    missing = []
    for k in _plain_unet_state(unet):
        if not k.startswith(DECODER):
            continue
        name = UNET_PREFIX + _ldm_name(namer, k)
        if name not in state:
            missing.append(name)
            continue
        out[f"unet_decoder.{k}"] = state[name]
    if missing:
        raise FormatError(f"the AnyDoor checkpoint lacks {len(missing)} UNet decoder tensors this base needs (e.g. "
                          f"{missing[0]}); it was made for another base model.")  # fmt: skip
    return out
