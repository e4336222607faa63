"""The LoRA method's files (Hu et al. 2021): ``lora.safetensors`` (diffusers/peft keys) and ``lora_kohya.safetensors``.

``lora.safetensors`` holds the diffusers/peft layout (``unet.<path>.lora_A.weight`` ...) with diffusers'
``lora_adapter_metadata`` (ranks, alphas) and tailor's metadata (method, config, base), so both
``pipe.load_lora_weights`` and ``tailor.load`` read it. ``lora_kohya.safetensors`` holds the kohya/A1111 layout
(``lora_unet_...lora_down/lora_up/alpha``, ``ss_network_dim`` / ``ss_network_alpha``) for A1111, ComfyUI and
sd-scripts. The key conversions live in :mod:`tailor.core.lora_formats`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tailor.core.io import PICKLE_SUFFIXES, load_tensors, read_metadata, save_tensors
from tailor.core.lora_formats import detect_layout, kohya_metadata, to_diffusers, to_kohya
from tailor.errors import FormatError

FILE = "lora.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"


def write_files(out_dir: str | Path, state: dict[str, torch.Tensor], meta: dict, sdxl: bool) -> tuple[Path, Path]:
    """Write both files from a canonical state dict; returns (lora.safetensors, lora_kohya.safetensors)."""
    out_dir = Path(out_dir)
    tensors, dmeta = to_diffusers(state)
    path, kpath = out_dir / FILE, out_dir / KOHYA_FILE
    save_tensors(path, tensors, {**dmeta, **meta})
    save_tensors(
        kpath, to_kohya(state, sdxl=sdxl), {**kohya_metadata(state), "tailor_base": str(meta.get("base", ""))}
    )
    return path, kpath


def read_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a LoRA file in any supported layout; FormatError for anything else."""
    path = Path(path)
    tensors = load_tensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        meta: dict[str, str] = {}
        if isinstance(tensors, dict) and isinstance(tensors.get("state_dict"), dict):
            tensors = tensors["state_dict"]
    else:
        meta = read_metadata(path)
    flat = isinstance(tensors, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in tensors.items())
    if not flat or detect_layout(tensors) is None:
        raise FormatError(
            f"{path} is not a LoRA file (no kohya lora_unet_/lora_te_ or diffusers lora_A/lora_B keys); "
            f"pass a LoRA .safetensors."
        )
    for key, value in tensors.items():
        if key.endswith(MATRIX_SUFFIXES) and (value.ndim not in (2, 4) or 0 in value.shape):
            raise FormatError(f"{path}: LoRA tensor {key} has shape {tuple(value.shape)}, not a 2-D or 4-D matrix; "
                              f"the file is damaged — re-export it.")  # fmt: skip
        if key.endswith(".alpha") and value.numel() != 1:
            raise FormatError(f"{path}: LoRA alpha {key} has {value.numel()} values, not one; the file is damaged.")
    return tensors, meta


MATRIX_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_down.weight", ".lora_up.weight")


def sniff_keys(path: str | Path) -> bool:
    """Whether ``path`` is a kohya or diffusers/peft LoRA (reads the safetensors header only)."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # an unreadable file is not ours to claim; tailor.load reports it
        return False
    return detect_layout(keys) is not None
