"""Community files of Textual Inversion (Gal et al. 2022) embeddings: read every common form, write the common ones.

Forms (the token is the file name stem, as in A1111, except for the diffusers form, whose key is the token):

- A1111 ``.pt``: ``{"string_to_token": {"*": 265}, "string_to_param": {"*": tensor[n, d]}, "name", "step",
  "sd_checkpoint", "sd_checkpoint_name"}`` (plain containers: loads with ``torch.load(weights_only=True)``).
- A1111 / kohya ``.safetensors``: ``{"emb_params": tensor[n, d]}``;
  SDXL: ``{"clip_l": [n, 768], "clip_g": [n, 1280]}``.
- diffusers: ``learned_embeds.safetensors`` / ``.bin`` with ``{token: tensor[n, d]}`` (``load_textual_inversion``).

Vectors are handled as ``{"clip_l": tensor, "clip_g": tensor}``: ``clip_l`` for the (first) text encoder, ``clip_g``
for an SDXL base's second one. Pickles are read only through :func:`tailor.core.io.safe_torch_load`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tailor.core.io import PICKLE_SUFFIXES, atomic_path, load_tensors, safe_torch_load, save_tensors
from tailor.errors import FormatError, IncompatibleError, UnsafeFileError

A1111_STAR_ID = 265  # the id of "*" in SD1's CLIP vocabulary, written by every A1111 embedding
MAX_SNIFF_BYTES = 64 << 20  # embeddings are kilobytes; never unpickle a whole checkpoint just to look at it


@dataclass
class Embedding:
    token: str
    vectors: dict[str, torch.Tensor]  # clip_l (and clip_g), each (n, d)
    name: str = ""


def token_from_stem(path: str | Path) -> str:
    """A1111 names an embedding by its file name; spaces become ``_`` (a tailor token is one word)."""
    return re.sub(r"\s+", "_", Path(path).stem.strip()) or "embedding"


def file_stem(token: str) -> str:
    """A file-name-safe stem for ``token``: brackets dropped, other unsafe characters ``_`` (``<s*>`` -> ``s_``)."""
    inner = token[1:-1] if token.startswith("<") and token.endswith(">") and len(token) > 2 else token
    return re.sub(r"[^A-Za-z0-9_.-]", "_", inner).strip(".") or "embedding"


def _rows(t, path) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.ndim not in (1, 2) or t.numel() == 0:
        raise FormatError(f"{path} holds no (vectors x width) embedding tensor; it is not a textual inversion file.")
    return (t.unsqueeze(0) if t.ndim == 1 else t).detach().float().cpu()


def parse(data, path: str | Path) -> Embedding:
    """An :class:`Embedding` from the loaded contents of any supported form."""
    if not isinstance(data, dict):
        raise FormatError(f"{path} is not a textual inversion embedding (its top level is not a mapping).")
    stem = token_from_stem(path)
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise FormatError(f"{path} must hold exactly one embedding in string_to_param; it holds {len(params)}.")
        return Embedding(stem, {"clip_l": _rows(next(iter(params.values())), path)}, str(data.get("name") or stem))
    if "clip_l" in data and "clip_g" in data:
        return Embedding(stem, {k: _rows(data[k], path) for k in ("clip_l", "clip_g")}, stem)
    if "emb_params" in data:
        return Embedding(stem, {"clip_l": _rows(data["emb_params"], path)}, stem)
    if len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        token, t = next(iter(data.items()))
        return Embedding(str(token), {"clip_l": _rows(t, path)}, str(token))
    raise FormatError(
        f"{path} is not a textual inversion embedding (no string_to_param, emb_params, clip_l/clip_g or single "
        f"{{token: tensor}}); pass an A1111, kohya or diffusers embedding file."
    )


def read(path: str | Path) -> Embedding:
    """Read an embedding file of any supported form (pickles without code execution)."""
    path = Path(path)
    data = safe_torch_load(path) if path.suffix in PICKLE_SUFFIXES else load_tensors(path)
    return parse(data, path)


def sniff(path: str | Path, meta: dict[str, str]) -> bool:
    """Whether ``path`` is an embedding file without tailor metadata (code-running pickles are refused loudly)."""
    path = Path(path)
    if meta.get("format") == "tailor":
        return False
    if path.suffix in PICKLE_SUFFIXES:
        if path.stat().st_size > MAX_SNIFF_BYTES:
            return False
        try:
            data = safe_torch_load(path)
        except UnsafeFileError:
            raise
        except FormatError:
            return False
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        except Exception:
            return False
        keys = set(shapes)
        if keys in ({"emb_params"}, {"clip_l", "clip_g"}) or (len(keys) == 1 and not keys & {"string_to_param"}):
            return all(len(s) in (1, 2) and all(s) for s in shapes.values())
        return False
    else:
        return False
    try:
        parse(data, path)
        return True
    except FormatError:
        return False


def check_width(emb_vectors: dict[str, torch.Tensor], widths: dict[str, int], path: str | Path) -> None:
    """IncompatibleError unless the file has vectors for exactly this base's text encoders, at their widths."""
    if set(emb_vectors) != set(widths):
        kind = {1: "SD (one text encoder)", 2: "SDXL (two text encoders)"}
        raise IncompatibleError(
            f"{path} is an embedding for {kind[len(emb_vectors)]} bases but this base is {kind[len(widths)]}; "
            f"use an embedding made for this base."
        )
    for key, t in emb_vectors.items():
        if t.shape[-1] != widths[key]:
            raise IncompatibleError(
                f"{path} has {key} vectors of width {t.shape[-1]} but this base's text encoder has width "
                f"{widths[key]}; it was made for another base model — use an embedding made for this one."
            )


# --------------------------------------------------------------------- writers
def write_a1111_pt(
    path: Path, vec: torch.Tensor, name: str, step: int, checkpoint_name: str | None, checkpoint: str | None = None
) -> None:
    """A1111's ``.pt`` layout, plain containers only (A1111, ComfyUI and diffusers read it)."""
    data = {
        "string_to_token": {"*": A1111_STAR_ID},
        "string_to_param": {"*": vec.detach().float().cpu().clone().contiguous()},
        "name": name,
        "step": int(step),
        "sd_checkpoint": checkpoint,
        "sd_checkpoint_name": checkpoint_name,
    }
    with atomic_path(path) as tmp:
        torch.save(data, str(tmp))


def a1111_fields(source: str | Path, token: str) -> dict[str, Any]:
    """``step``, ``sd_checkpoint`` and ``sd_checkpoint_name`` of the A1111 ``.pt`` that ``source`` is, or that sits
    beside it (a training ``--out`` folder, or the folder of its ``textual_inversion.safetensors``, holds
    ``<token stem>.pt``); ``{"step": 0}`` when there is none, so a conversion keeps what the training recorded."""
    source = Path(source)
    if source.suffix in PICKLE_SUFFIXES:
        candidates = [source]
    else:
        folder = source if source.is_dir() else source.parent
        candidates = [folder / f"{file_stem(token)}.pt"]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            data = safe_torch_load(path)
        except FormatError:
            continue
        if isinstance(data, dict) and "string_to_param" in data:
            step = data.get("step")
            return {
                "step": int(step) if isinstance(step, int) else 0,
                "sd_checkpoint": data.get("sd_checkpoint") if isinstance(data.get("sd_checkpoint"), str) else None,
                "sd_checkpoint_name": data.get("sd_checkpoint_name")
                if isinstance(data.get("sd_checkpoint_name"), str)
                else None,
            }
    return {"step": 0}


def write_a1111_safetensors(path: Path, vectors: dict[str, torch.Tensor]) -> None:
    """``emb_params`` (SD) or ``clip_l`` + ``clip_g`` (SDXL), as A1111 / kohya write them."""
    tensors = dict(vectors) if "clip_g" in vectors else {"emb_params": vectors["clip_l"]}
    save_tensors(path, {k: v.float() for k, v in tensors.items()})


def write_diffusers(path: Path, token: str, vec: torch.Tensor) -> None:
    """``{token: tensor[n, d]}``: what diffusers' textual_inversion.py writes and ``load_textual_inversion`` reads."""
    save_tensors(path, {token: vec.float()})
