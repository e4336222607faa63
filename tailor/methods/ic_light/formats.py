"""IC-Light's official file: a safetensors of **offsets** over the base UNet's diffusers keys.

The official demos widen ``conv_in`` (new channels zero, bias kept), then load ``merged = base + offset`` for every
key of the widened UNet's state dict; ``conv_in.weight`` is ``[C, 8, 3, 3]`` (fc) or ``[C, 12, 3, 3]`` (fbc). Keys
carry no prefix and the file no metadata. :func:`sniff` recognises such a file, :func:`read_offsets` reads it and
:func:`write_offsets` writes one the official demo loads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tailor.core.io import load_tensors, save_tensors
from tailor.errors import FormatError

#: the key whose input width says fc (8 = 2 x 4 latent channels) or fbc (12)
CONV_IN = "conv_in.weight"


def sniff(path: Path, metadata: dict[str, str]) -> bool:
    """Whether ``path`` looks like an official IC-Light offsets file (UNet keys, a widened ``conv_in``)."""
    if path.suffix != ".safetensors" or metadata.get("format") == "tailor":
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if CONV_IN not in keys or not any(k.startswith("down_blocks.") for k in keys):
                return False
            shape = f.get_slice(CONV_IN).get_shape()
    except (OSError, ValueError, RuntimeError):
        return False
    return len(shape) == 4 and shape[1] % 4 == 0 and shape[1] // 4 in (2, 3)


def mode_of(offsets: dict[str, torch.Tensor], path: str | Path) -> str:
    """fc or fbc, from the width of ``conv_in.weight``."""
    w = offsets.get(CONV_IN)
    if w is None or w.ndim != 4 or w.shape[1] % 4 or w.shape[1] // 4 not in (2, 3):
        raise FormatError(f"{path} has no conv_in.weight of 8 or 12 input channels; it is not an IC-Light file.")
    return "fc" if w.shape[1] // 4 == 2 else "fbc"


def read_offsets(path: str | Path) -> dict[str, torch.Tensor]:
    return load_tensors(path)


def write_offsets(path: str | Path, offsets: dict[str, torch.Tensor]) -> Path:
    """The official layout: plain diffusers UNet keys, contiguous tensors, no tailor metadata."""
    save_tensors(Path(path), {k: v.contiguous() for k, v in offsets.items()}, None)
    return Path(path)
