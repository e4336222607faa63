"""InstantID files in the official release's layout (Wang et al. 2024, instantX-research/InstantID):
``ip-adapter.bin`` / ``.safetensors`` = ``{"image_proj": Resampler, "ip_adapter": {"<2n+1>.to_k_ip.weight", ...}}``
(the IP-Adapter-Plus layout: diffusers' ``load_ip_adapter`` reads it, the resampler's input width being the face
embedding's; its own width, heads, depth and queries are read from the weights, the SDXL release's 1280, 20, 4, 16)
and ``ControlNetModel/`` = IdentityNet as a diffusers ControlNet folder.

tailor's own file ``instantid.safetensors`` carries all three parts with metadata: ``image_proj.*``,
``ip_adapter.*`` and ``identitynet.<diffusers ControlNet key>``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tailor.core.io import (
    PICKLE_SUFFIXES,
    atomic_dir,
    load_tensors,
    meta_json,
    read_metadata,
    safe_torch_load,
    save_tensors,
)
from tailor.core.method import ARTIFACT_FORMAT
from tailor.core.resampler import resampler_sizes
from tailor.errors import FormatError

IP_FILES = ("ip-adapter.safetensors", "ip-adapter.bin")
CONTROLNET_DIR = "ControlNetModel"


def check_layers(ip: dict[str, torch.Tensor], layers: int) -> None:
    """The file's ``ip_adapter.*`` keys cover this base's ``layers`` cross-attention layers."""
    found = sum(k.endswith(".to_k_ip.weight") for k in ip)
    if found != layers:
        raise FormatError(f"the InstantID file has {found} cross-attention layers but this base has {layers}; use "
                          f"an InstantID trained for this base.")  # fmt: skip


def split(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """Flat keys -> (image_proj, ip_adapter, identitynet) dicts without their prefixes."""
    parts: tuple[dict, dict, dict] = ({}, {}, {})
    for k, v in state.items():
        for i, prefix in enumerate(("image_proj.", "ip_adapter.", "identitynet.")):
            if k.startswith(prefix):
                parts[i][k[len(prefix) :]] = v
    return parts


def write_official(out: Path, state: dict[str, torch.Tensor], controlnet) -> None:
    ip = {k: v.contiguous() for k, v in state.items() if k.startswith(("image_proj.", "ip_adapter."))}
    save_tensors(out / IP_FILES[0], ip, {"format": "instantid-ip-adapter"})
    with atomic_dir(out / CONTROLNET_DIR) as tmp:
        controlnet.save_pretrained(tmp)


def read_ip(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix in PICKLE_SUFFIXES:
        data = safe_torch_load(path)
        if not isinstance(data, dict) or not {"image_proj", "ip_adapter"} <= set(data):
            raise FormatError(f"{path} is not an InstantID ip-adapter file (no image_proj / ip_adapter dicts).")
        return {f"{part}.{k}": v for part in ("image_proj", "ip_adapter") for k, v in data[part].items()}
    return load_tensors(path)


def official_folder(path: Path) -> Path | None:
    folder = path if path.is_dir() else path.parent
    if (folder / CONTROLNET_DIR / "config.json").is_file() and any((folder / f).is_file() for f in IP_FILES):
        return folder
    return None


def sniff(path: Path) -> bool:
    return path.name in IP_FILES and official_folder(path) is not None


def load(cls, path: Path):
    """A tailor ``instantid.safetensors``, or an official folder (``ip-adapter.*`` + ``ControlNetModel/``)."""
    from tailor.core.method import get_spec

    meta = read_metadata(path) if path.suffix == ".safetensors" and path.is_file() else {}
    if meta.get("format") == ARTIFACT_FORMAT and meta.get("method") == cls.name:
        config = cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path))
        if not config.embed_dim and meta.get("embed_dim", "0") != "0":
            config = config.replace(embed_dim=int(meta["embed_dim"]))
        method = cls(config)
        method.load_state_dict(load_tensors(path))
        return method
    folder = official_folder(path)
    if folder is None:
        raise FormatError(f"{path} is neither a tailor InstantID file nor a folder with ip-adapter.bin/.safetensors "
                          f"and {CONTROLNET_DIR}/; pass one of those.")  # fmt: skip
    ip = read_ip(next(folder / f for f in IP_FILES if (folder / f).is_file()))
    if "image_proj.latents" not in ip or "image_proj.proj_in.weight" not in ip:
        raise FormatError(f"{folder}'s ip-adapter file has no Resampler (image_proj.latents); it is not InstantID's.")
    proj, _, _ = split(ip)
    sizes = resampler_sizes(proj, str(folder))  # the resampler's own sizes, as diffusers' loader reads them
    config = cls.config_cls(embed_dim=sizes["embed_dim"], num_tokens=sizes["num_tokens"],
                            resampler_depth=sizes["depth"], resampler_width=sizes["width"],
                            resampler_heads=sizes["heads"])  # fmt: skip
    method = cls(config)
    net = get_spec("controlnet").method.from_diffusers_folder(folder / CONTROLNET_DIR)
    if net is None:
        raise FormatError(f"{folder / CONTROLNET_DIR} is not a diffusers ControlNet folder; re-save IdentityNet.")
    method.identitynet = net
    method.load_state_dict(ip)
    return method
