"""IP-Adapter files in the official layout (Ye et al. 2023, tencent-ailab/IP-Adapter), which diffusers'
``load_ip_adapter`` reads.

``ip_adapter.safetensors``: ``image_proj.<key>`` (the projection, original names) and
``ip_adapter.<id>.to_k_ip.weight`` / ``to_v_ip.weight`` where ``id = 2 n + 1`` for the n-th cross-attention layer in
``unet.attn_processors`` order (the odd slots; self-attention slots carry nothing). The ``.bin`` form is the pickled
dict ``{"image_proj": {...}, "ip_adapter": {...}}``, read only through ``safe_torch_load``.

Projection names: our modules are diffusers' ``ImageProjection`` / ``IPAdapterPlusImageProjection``; the file keeps the
original ones (plain: ``proj.*``, ``norm.*``; Plus: ``latents``, ``proj_in``, ``proj_out``, ``norm_out``,
``layers.<i>.0.{norm1,norm2,to_q,to_kv,to_out}``, ``layers.<i>.1.{0,1,3}`` = LayerNorm, Linear, -, Linear).

InstantID and PuLID save their ID adapters in this layout too; they reach this module through the registry
(``get_spec("ip_adapter").method.file_layout()``), not by importing this folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tailor.core.io import PICKLE_SUFFIXES, check_weights, load_tensors, safe_torch_load
from tailor.errors import FormatError

# --------------------------------------------------------------------- layout
PLUS_ATTN = {"ln0": "0.norm1", "ln1": "0.norm2", "attn.to_q": "0.to_q", "attn.to_out.0": "0.to_out",
             "ff.0": "1.0", "ff.1.net.0.proj": "1.1", "ff.1.net.2": "1.3"}  # fmt: skip


def proj_to_official(state: dict[str, torch.Tensor], plus: bool) -> dict[str, torch.Tensor]:
    """diffusers module names -> the original repository's names."""
    out: dict[str, torch.Tensor] = {}
    if not plus:
        for k, v in state.items():
            out[k.replace("image_embeds.", "proj.")] = v
        return out
    for k, v in state.items():
        m = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m is None:
            out[k] = v
            continue
        i, mod, kind = m.groups()
        if mod in ("attn.to_k", "attn.to_v"):
            if mod == "attn.to_k":
                out[f"layers.{i}.0.to_kv.{kind}"] = torch.cat([v, state[f"layers.{i}.attn.to_v.{kind}"]], dim=0)
            continue
        if mod not in PLUS_ATTN:
            raise FormatError(f"unexpected resampler weight {k}")
        out[f"layers.{i}.{PLUS_ATTN[mod]}.{kind}"] = v
    return out


def proj_from_official(state: dict[str, torch.Tensor], plus: bool) -> dict[str, torch.Tensor]:
    """The original names -> diffusers module names (inverse of :func:`proj_to_official`)."""
    out: dict[str, torch.Tensor] = {}
    if not plus:
        for k, v in state.items():
            out[k.replace("proj.", "image_embeds.", 1) if k.startswith("proj.") else k] = v
        return out
    inverse = {v: k for k, v in PLUS_ATTN.items()}
    for k, v in state.items():
        m = re.match(r"layers\.(\d+)\.(\d\.(?:norm1|norm2|to_q|to_kv|to_out|\d))\.(weight|bias)$", k)
        if m is None:
            out[k] = v
            continue
        i, mod, kind = m.groups()
        if mod == "0.to_kv":
            key, value = v.chunk(2, dim=0)
            out[f"layers.{i}.attn.to_k.{kind}"], out[f"layers.{i}.attn.to_v.{kind}"] = key, value
        elif mod in inverse:
            out[f"layers.{i}.{inverse[mod]}.{kind}"] = v
        else:
            raise FormatError(f"unexpected IP-Adapter-Plus resampler weight {k}")
    return out


def branch_to_official(branch) -> dict[str, torch.Tensor]:
    """An :class:`~tailor.core.attention.ImageBranch`'s ``to_k_ip`` / ``to_v_ip`` under the official keys
    (``ip_adapter.<2n+1>.to_k_ip.weight``: the odd indices of the attention processors, self-attention taking the even
    ones), as diffusers' ``load_ip_adapter`` reads them."""
    out = {}
    for n in range(len(branch.layer_names)):
        out[f"ip_adapter.{2 * n + 1}.to_k_ip.weight"] = branch.to_k_ip[n].weight.detach()
        out[f"ip_adapter.{2 * n + 1}.to_v_ip.weight"] = branch.to_v_ip[n].weight.detach()
    return out


def branch_from_official(ip: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """``ip_adapter.*`` keys (prefix removed) -> the state dict of an ``ImageBranch`` over ``layers`` layers."""
    kinds = ("to_k_ip", "to_v_ip")
    return {f"{kind}.{n}.weight": ip[f"{2 * n + 1}.{kind}.weight"] for n in range(layers) for kind in kinds}


def to_official(proj_state: dict[str, torch.Tensor], branch, plus: bool) -> dict[str, torch.Tensor]:
    """A projection's state dict and a branch -> the flat official keys (``image_proj.*`` + ``ip_adapter.*``)."""
    out = {f"image_proj.{k}": v for k, v in proj_to_official(proj_state, plus).items()}
    out.update(branch_to_official(branch))
    return out


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
