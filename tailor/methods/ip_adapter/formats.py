"""IP-Adapter files in the official layout (Ye et al. 2023, tencent-ailab/IP-Adapter), which diffusers'
``load_ip_adapter`` reads.

``ip_adapter.safetensors``: ``image_proj.<key>`` (the projection, original names) and
``ip_adapter.<id>.to_k_ip.weight`` / ``to_v_ip.weight`` where ``id = 2 n + 1`` for the n-th cross-attention layer in
``unet.attn_processors`` order (the odd slots; self-attention slots carry nothing). The ``.bin`` form is the pickled
dict ``{"image_proj": {...}, "ip_adapter": {...}}``, read only through ``safe_torch_load``.

Projection names: our modules are diffusers' ``ImageProjection`` / ``IPAdapterPlusImageProjection``; the file keeps the
original ones (plain: ``proj.*``, ``norm.*``; Plus: ``latents``, ``proj_in``, ``proj_out``, ``norm_out``,
``layers.<i>.0.{norm1,norm2,to_q,to_kv,to_out}``, ``layers.<i>.1.{0,1,3}`` = LayerNorm, Linear, -, Linear).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tailor.core.io import PICKLE_SUFFIXES, check_weights, load_tensors, safe_torch_load
from tailor.core.resampler import PLUS_ATTN, proj_from_official, proj_to_official  # noqa: F401 - moved to core
from tailor.errors import FormatError


def is_plus(image_proj: dict[str, torch.Tensor]) -> bool:
    """diffusers' rule: ``proj.weight`` -> 4-token projection, ``latents`` -> Plus resampler."""
    if "latents" in image_proj:
        return True
    if "proj.weight" in image_proj:
        return False
    raise FormatError(
        "the IP-Adapter file's image_proj is neither the 4-token projection (proj.weight) nor the Plus "
        "resampler (latents); FaceID / full-face variants are not supported."
    )


def split(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Flat ``image_proj.*`` / ``ip_adapter.*`` keys -> (image_proj, ip_adapter) dicts without the prefixes."""
    proj = {k[len("image_proj.") :]: v for k, v in state.items() if k.startswith("image_proj.")}
    ip = {k[len("ip_adapter.") :]: v for k, v in state.items() if k.startswith("ip_adapter.")}
    return proj, ip


def read(path: str | Path) -> dict[str, torch.Tensor]:
    """An official file (``.safetensors`` flat keys, or the ``.bin`` nested dict) as flat prefixed keys."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        data = safe_torch_load(path)
        parts = ("image_proj", "ip_adapter")
        if not isinstance(data, dict) or not all(isinstance(data.get(p), dict) for p in parts):
            raise FormatError(
                f"{path} is not an IP-Adapter file (no image_proj / ip_adapter dicts); pass an "
                f"ip_adapter .bin or .safetensors."
            )
        flat = {f"{part}.{k}": v for part in parts for k, v in data[part].items()}
        if not all(torch.is_tensor(v) for v in flat.values()):
            raise FormatError(f"{path} holds IP-Adapter entries that are not tensors; the file is damaged.")
        check_weights(flat, path)
        return flat
    return load_tensors(path)


def sniff(path: str | Path, metadata: dict[str, str]) -> bool:
    """Claim official IP-Adapter files: keys ``image_proj.*`` + ``ip_adapter.*`` (or the ``.bin`` dict form)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
            return bool(keys) and all(k.startswith(("image_proj.", "ip_adapter.")) for k in keys) and any(
                k.startswith("ip_adapter.") for k in keys)  # fmt: skip
        if path.suffix in PICKLE_SUFFIXES:
            data = safe_torch_load(path)
            return isinstance(data, dict) and set(data) == {"image_proj", "ip_adapter"}
    except Exception:
        return False
    return False
