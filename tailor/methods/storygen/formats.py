"""StoryGen weights in the official layout (haoningwu3639/StoryGen): the context module lives inside the UNet's
state dict, ``<block>.attn3.{to_q,to_k,to_v}.weight``, ``<block>.attn3.to_out.0.{weight,bias}`` and
``<block>.norm4.{weight,bias}`` for every ``BasicTransformerBlock`` (``<block>`` = ``down_blocks.0.attentions.0.
transformer_blocks.0``, diffusers' module path). A trained official UNet (``unet/diffusion_pytorch_model.safetensors``
or ``.bin``) is read for those keys only (the rest is the fine-tuned base, which tailor does not take from here);
``.bin`` is read only through ``safe_torch_load`` (no code execution)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tailor.core.io import load_tensors, safe_torch_load
from tailor.errors import FormatError

KEY = re.compile(r"^(.+\.transformer_blocks\.\d+)\.((?:attn3|norm4)\..+)$")
PREFIX = "storygen."


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """tailor's ``storygen.<block>.attn3.*`` -> the official ``<block>.attn3.*``."""
    return {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official UNet keys (``attn3.*`` / ``norm4.*`` only; other keys ignored) -> tailor's."""
    out = {PREFIX + k: v for k, v in state.items() if KEY.match(k)}
    if not out:
        raise FormatError("the file holds no StoryGen context weights (no <block>.attn3.* / <block>.norm4.* keys).")
    return out


def read(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    state = load_tensors(path, check=False) if path.suffix == ".safetensors" else safe_torch_load(path)
    if not isinstance(state, dict):
        raise FormatError(f"{path} is not a state dict; give the official unet's weights file.")
    return from_official(state)


def sniff(path: str | Path, metadata: dict[str, str]) -> bool:
    if metadata.get("format") == "tailor":
        return False
    if Path(path).suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # noqa: BLE001 - an unreadable file is not a StoryGen file
        return False
    return any(k.endswith(".attn3.to_q.weight") for k in keys)
