"""The PhotoVerse file (no official release to match: the paper published no code or weights).

``photoverse.safetensors`` (tailor metadata) holds three parts under their prefixes::

    adapters.text.*  adapters.image.*  adapters.image_norm.*     the two adapters (text -> pseudo-word, image tokens)
    image_branch.to_{k,v}_ip.<i>.lora_{A,B}.weight                 the image cross-attention's K / V LoRA, layer i in
                                                                   ``unet.attn_processors`` order
    unet.<attn2 path>.to_{k,v}.lora_{A,B}.weight / .alpha        the text branch's LoRA, tailor's canonical layout
                                                                   (:mod:`tailor.core.lora`, diffusers/peft keys)
"""

from __future__ import annotations

import torch

from tailor.errors import FormatError

PARTS = ("adapters.", "image_branch.", "unet.")


def to_file(adapters: dict, branch: dict, lora: dict) -> dict[str, torch.Tensor]:
    out = {f"adapters.{k}": v for k, v in adapters.items()}
    out.update({f"image_branch.{k}": v for k, v in branch.items()})
    out.update(lora)
    return out


def from_file(state: dict[str, torch.Tensor], source: str) -> tuple[dict, dict, dict]:
    """(adapters, image branch, canonical LoRA) of a file's tensors; one sentence for a file that is not one."""
    unknown = [k for k in state if not k.startswith(PARTS)]
    if unknown:
        raise FormatError(f"{source} holds {unknown[0]!r}, not a PhotoVerse key; pass a PhotoVerse file.")
    parts = [{k[len(p) :]: v for k, v in state.items() if k.startswith(p)} for p in PARTS[:2]]
    lora = {k: v for k, v in state.items() if k.startswith("unet.")}
    for name, part in zip(("adapters", "image-branch"), parts):
        if not part:
            raise FormatError(f"{source} has no PhotoVerse {name} weights; the file is incomplete.")
    if not lora:
        raise FormatError(f"{source} has no PhotoVerse LoRA weights; the file is incomplete.")
    return parts[0], parts[1], lora
