"""The official IDM-VTON folder layout (yisol/IDM-VTON: ``train_xl.py``, ``gradio_demo/app.py``).

An IDM-VTON model folder holds, besides the SDXL text encoders, tokenizers, VAE and scheduler of its base:

``unet/``           TryonNet: a ``UNet2DConditionModel`` config with ``in_channels`` 13 (noisy 4 + mask 1 + masked
                    image 4 + pose 4) and ``encoder_hid_dim_type: "ip_image_proj"`` (``encoder_hid_dim`` = the image
                    encoder's width); its weights hold the UNet's own keys, the IP-Adapter-Plus resampler under
                    ``encoder_hid_proj.*`` (the IP-Adapter repository's names: ``latents``, ``proj_in``,
                    ``layers.<i>.0.to_kv``, ...) and the decoupled attention's keys under
                    ``<cross-attention layer>.processor.to_k_ip.weight`` / ``to_v_ip.weight``;
``unet_encoder/``   GarmentNet: a plain ``UNet2DConditionModel`` (4 input channels), frozen;
``image_encoder/``  a ``CLIPVisionModelWithProjection``.

:func:`write_official` writes these three folders (and a ``model_index.json`` naming them) from an attached
:class:`~.method.RefUnetMethod`: the low-rank update is merged into TryonNet's weights, so ``unet`` is the full
13-channel UNet. :func:`read_official` reads such a folder (or its ``unet`` weight file) back: TryonNet's whole UNet,
GarmentNet's weights as the reference UNet, the IP-Adapter-Plus through the ``ip_adapter`` method's own layout.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import torch

from tailor.core.io import atomic_dir, load_tensors, save_tensors, write_json
from tailor.core.method import get_spec
from tailor.errors import FormatError, InputError

WEIGHTS = "diffusion_pytorch_model.safetensors"
PROJ = "encoder_hid_proj."
IP_KEY = re.compile(r"^(.+\.processor)\.(to_[kv]_ip)\.weight$")
_BLOCK_RANK = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}  # diffusers' UNet child order (attn_processors)


def _layer_order(name: str) -> tuple:
    """Sort key of a processor name in ``unet.attn_processors`` order (down, up, mid; then the indices)."""
    head = name.split(".")[0]
    return (_BLOCK_RANK.get(head, 3), [int(p) if p.isdigit() else p for p in name.split(".")[1:]])


def tryon_state(method) -> dict[str, torch.Tensor]:
    """TryonNet's weights as plain UNet keys (the low-rank update merged; 13-channel ``conv_in``)."""
    unet = method.components.unet
    lora = method.lora if method.lora is not None and method.lora.components is not None else None
    if lora is not None:
        lora.fuse()
    try:
        out = {}
        for k, v in unet.state_dict().items():
            if ".lora_A." in k or ".lora_B." in k or "lora_magnitude" in k:
                continue
            out[k.replace(".base_layer.", ".")] = v.detach().cpu().clone()
    finally:
        if lora is not None:
            lora.unfuse()
    return out


def write_official(method, out_dir: str | Path) -> Path:
    """``unet/`` (13 input channels, IP-Adapter-Plus inside), ``unet_encoder/``, ``image_encoder/``,
    ``model_index.json``; written to a temporary folder and renamed (nothing half-written)."""
    if method.components is None:
        raise InputError("write_official needs an attached ref_unet method; attach it to its base first.")
    unet = method.components.unet
    state = tryon_state(method)
    config = dict(unet.config)
    ip = method.ip
    if ip is not None:
        layout = get_spec("ip_adapter").method.file_layout()
        proj = layout.proj_to_official(ip.proj.state_dict(), ip.config.plus)
        state.update({PROJ + k: v.detach().cpu() for k, v in proj.items()})
        for n, name in enumerate(ip.branch.layer_names):
            state[f"{name}.to_k_ip.weight"] = ip.branch.to_k_ip[n].weight.detach().cpu()
            state[f"{name}.to_v_ip.weight"] = ip.branch.to_v_ip[n].weight.detach().cpu()
        config.update(encoder_hid_dim_type="ip_image_proj", encoder_hid_dim=int(ip.encoder.config.hidden_size))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config["_class_name"] = "UNet2DConditionModel"
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        (tmp / "unet").mkdir()
        write_json(tmp / "unet" / "config.json", config)
        save_tensors(tmp / "unet" / WEIGHTS, {k: v.contiguous() for k, v in state.items()})
        index = {"_class_name": "TryonPipeline", "unet": ["src.unet_hacked_tryon", "UNet2DConditionModel"]}
        if method.reference is not None:
            method.reference.save_pretrained(tmp / "unet_encoder", safe_serialization=True)
            index["unet_encoder"] = ["src.unet_hacked_garmnet", "UNet2DConditionModel"]
        if ip is not None:
            ip.encoder.save_pretrained(tmp / "image_encoder", safe_serialization=True)
            index["image_encoder"] = ["transformers", "CLIPVisionModelWithProjection"]
        write_json(tmp / "model_index.json", index)
    return out


def folder_of(path: str | Path) -> Path:
    """The model folder a path names: the folder itself, its ``unet`` folder or ``unet``'s weight file."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if p.name == "unet" and not (p / "unet").is_dir():
        p = p.parent
    return p


def sniff(path: str | Path) -> bool:
    """An IDM-VTON folder: ``unet/config.json`` with 13 input channels beside ``unet_encoder`` (the file sniffed is
    ``unet``'s weights, which ``tailor.load(FOLDER/unet)`` resolves to)."""
    root = folder_of(path)
    cfg = root / "unet" / "config.json"
    try:
        return cfg.is_file() and (root / "unet_encoder").is_dir() and json.loads(cfg.read_text())["in_channels"] == 13
    except (json.JSONDecodeError, KeyError, TypeError, OSError):
        return False


def read_official(path: str | Path, cls):
    """An IDM-VTON folder -> a ``RefUnetMethod`` holding TryonNet's whole UNet (``ref_unet.unet.*``), GarmentNet's
    weights (the reference UNet) and the IP-Adapter-Plus (with the folder's ``image_encoder``)."""
    root = folder_of(path)
    cfg_path, weights = root / "unet" / "config.json", root / "unet" / WEIGHTS
    if not cfg_path.is_file() or not weights.is_file():
        raise FormatError(
            f"{path} is not an IDM-VTON folder or its unet weights (no {root}/unet/config.json and "
            f"unet/{WEIGHTS}); pass the folder that holds unet/, unet_encoder/ and image_encoder/."
        )
    cfg = json.loads(cfg_path.read_text())
    if int(cfg.get("in_channels", 0)) != 13:
        raise FormatError(f"{root}/unet takes {cfg.get('in_channels')} input channels, not IDM-VTON's 13 (noisy + "
                          f"mask + masked image + pose latents); pass an IDM-VTON folder.")  # fmt: skip
    state = load_tensors(weights)
    proj = {k[len(PROJ) :]: v for k, v in state.items() if k.startswith(PROJ)}
    ips = {k: v for k, v in state.items() if IP_KEY.match(k)}
    unet = {k: v for k, v in state.items() if not k.startswith(PROJ) and k not in ips}
    encoder = root / "unet_encoder" / WEIGHTS
    method = cls(cls.config_cls(reference_unet=encoder.is_file(), ip_adapter=""))
    method.load_state_dict({f"ref_unet.unet.{k}": v for k, v in unet.items()})
    if encoder.is_file():
        method._reference_state = load_tensors(encoder)
    if proj and ips:
        layers = sorted({IP_KEY.match(k).group(1) for k in ips}, key=_layer_order)
        official = {f"image_proj.{k}": v for k, v in proj.items()}
        for n, name in enumerate(layers):
            for kind in ("to_k_ip", "to_v_ip"):
                official[f"ip_adapter.{2 * n + 1}.{kind}.weight"] = ips[f"{name}.{kind}.weight"]
        image_encoder = root / "image_encoder"
        if not (image_encoder / "config.json").is_file():
            raise FormatError(f"{root} has IP-Adapter weights in unet but no image_encoder folder; the folder is "
                              f"incomplete.")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "ip_adapter.safetensors"
            save_tensors(file, official)
            method._ip_loaded = get_spec("ip_adapter").method.from_file(file, image_encoder=str(image_encoder))
    return method
