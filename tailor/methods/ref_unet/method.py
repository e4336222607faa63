"""IDM-VTON's try-on UNet with a frozen reference UNet (Choi et al. 2024; official code yisol/IDM-VTON).

TryonNet: the base UNet's ``conv_in`` is widened (:mod:`tailor.core.input_channels`) from 4 to 13 input channels,
``[noisy latent 4 | mask 1 | masked-image latent 4 | shape-map latent 4]`` (the paper's DensePose map; in the world
the object's silhouette); it also reads IP-Adapter-Plus tokens of the reference (the shipped ``world-plus``, frozen,
composed through the registry). GarmentNet: a frozen copy of the base UNet (taken before anything is attached) runs
on the *clean* reference latent at the same timestep, with the prompt; its transformer blocks' self-attention inputs
``norm1(x)`` are written into a reference bank (:mod:`tailor.core.reference_bank`) and TryonNet's self-attention reads
them by concatenation: ``Attn(Q(x), K([x; f]), V([x; f]))``, which is exactly the official
``attn1(cat([x, f]))[:, :N]`` (the output cropped back to the main token count: each query row attends on its own).
With classifier-free guidance the unconditional rows get zero reference features, as the official pipeline does.

What trains (a deviation the world's 2 MB budget asks for, stated): ``conv_in`` in full (at ``input_lr_scale`` x
the rate) and a low-rank update (core LoRA, rank ``rank``) of the rest of TryonNet; IDM-VTON fine-tunes the whole
TryonNet and the IP-Adapter's projection. The reference UNet is the frozen base and is not saved.

``reference_unet=False`` is the paper's ablation "inpainting + IP-Adapter only": the same TryonNet without the bank.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from tailor.core.conditioning import StepExtras, StepState
from tailor.core.input_channels import restore_conv_in, unet_in_channels, widen_conv_in
from tailor.core.latents import scale_latents
from tailor.core.lora import LoRA, find_targets, specs_from_state
from tailor.core.method import Method
from tailor.core.reference_bank import ReferenceBank, run_reference_pass
from tailor.errors import ConfigError, IncompatibleError, InputError
from tailor.methods.ref_unet.config import RefUnetConfig

log = logging.getLogger("tailor")
CONV = "conv_in."
LORA = "lora."
FULL = "unet."  # a whole TryonNet (read from an official folder) instead of conv_in + LoRA


def _image(x: Any, what: str) -> Image.Image:
    if isinstance(x, Image.Image):
        return x
    if isinstance(x, np.ndarray):
        return Image.fromarray(x)
    if isinstance(x, str | Path):
        from tailor.core.images import load_image

        return load_image(x)
    raise InputError(f"the try-on {what} must be an image or a path; got {type(x).__name__}.")


def tryon_inputs(inputs: dict[str, Any]) -> dict[str, Image.Image]:
    """``scene``, ``reference``, ``mask`` and (optional) ``shape`` from an attachment's inputs: ``tryon`` = the list
    ``[scene, reference, mask(, shape)]`` (``--ref-unet MODEL=SCENE+REF+MASK[+SHAPE]``) or the named inputs."""
    got = dict.fromkeys(("scene", "reference", "mask", "shape"))
    listed = inputs.get("tryon")
    if listed is not None:
        listed = list(listed) if isinstance(listed, list | tuple) else [listed]
        if not 3 <= len(listed) <= 4:
            raise InputError(f"ref_unet takes SCENE+REFERENCE+MASK[+SHAPE]; got {len(listed)} images.")
        got.update(zip(("scene", "reference", "mask", "shape"), listed))
    for k in got:
        if inputs.get(k) is not None:
            got[k] = inputs[k]
    for k in ("scene", "reference", "mask"):
        if got[k] is None:
            raise InputError(f"ref_unet needs a {k} image; pass --ref-unet MODEL=SCENE+REFERENCE+MASK[+SHAPE].")
    return {k: _image(v, k) for k, v in got.items() if v is not None}


class RefUnetMethod(Method):
    """Attach with ``pipe.attach(method, scene=IMG, reference=IMG, mask=IMG, shape=IMG)`` (or ``tryon=[...]``)."""

    name = "ref_unet"
    widens_input = True  # its conv_in takes the inputs' extra channels
    config_cls = RefUnetConfig
    default_lr: ClassVar[float] = 1e-4

    def __init__(self, config: RefUnetConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.lora: LoRA | None = None
        self.reference: nn.Module | None = None  # GarmentNet: the frozen base UNet
        self.writer = self.reader = None
        self.ip: Method | None = None  # the IP-Adapter-Plus (frozen), or None
        self._ip_loaded: Method | None = None  # an IP-Adapter read from an official folder
        self._reference_state: dict[str, torch.Tensor] | None = None  # GarmentNet read from an official folder
        self._replaced_conv: nn.Conv2d | None = None
        self._state: dict[str, torch.Tensor] = {}  # weights to apply on attach
        self._base: dict[str, torch.Tensor] = {}  # the base UNet, while a full official TryonNet is loaded
        self._cache: tuple | None = None
        self._warned: set[str] = set()
        self._seed = 0

    @property
    def input_channels(self) -> int:  # type: ignore[override]
        latent = int(self.components.vae.config.latent_channels) if self.components is not None else 4
        return 1 + 2 * latent

    # ------------------------------------------------------------------ build / attach
    def build(self, components) -> None:
        unet = components.unet
        latent = int(components.vae.config.latent_channels)
        if unet_in_channels(unet) != latent:
            raise IncompatibleError(
                f"ref_unet widens a plain UNet ({latent} input channels); this base's takes {unet_in_channels(unet)} "
                f"(an inpainting base?) — attach it to a plain base."
            )
        if self.config.reference_unet:
            from diffusers.models.attention_processor import AttnProcessor2_0

            self.reference = copy.deepcopy(unet).requires_grad_(False).eval()
            self.reference.set_attn_processor(AttnProcessor2_0())  # the plain base, whatever was attached
            if self._reference_state is not None:
                from tailor.core.method import load_module_state

                load_module_state(self.reference, self._reference_state, f"{self.source_file} (unet_encoder)")
        targets = find_targets(components, self.config.lora_targets)
        self.lora = LoRA(self.name, {k: (self.config.rank, float(self.config.rank)) for k in targets})
        if self._ip_loaded is not None:
            self.ip = self._ip_loaded
        elif self.config.ip_adapter:
            from tailor.core.artifacts import resolve_artifact
            from tailor.core.method import get_spec

            self.ip = get_spec("ip_adapter").method.from_file(resolve_artifact(self.config.ip_adapter))

    def modules(self) -> list[nn.Module]:
        if self.components is None or self._replaced_conv is None:
            return []
        return [self.components.unet.conv_in] + (self.lora.modules() if self.lora.components is not None else [])

    def attach(self, components) -> None:
        if self._replaced_conv is not None:
            return
        unet = components.unet
        self._replaced_conv = widen_conv_in(unet, self.input_channels)
        try:
            full = {k[len(FULL) :]: v for k, v in self._state.items() if k.startswith(FULL)}
            if full:  # an official TryonNet: its whole UNet, no LoRA
                self._base = {k: v.detach().to("cpu", copy=True) for k, v in unet.state_dict().items()}
                self._load_full(unet, full)
            else:
                self.lora.attach(components, trainable=True)
                self._apply_state()
            unet.conv_in.requires_grad_(True)
            if self.reference is not None:
                # a reader of its own (never read: GarmentNet runs only in passes), so a pass stops after the last
                # self-attention instead of running the up block and conv_out that no bank needs
                self.writer = ReferenceBank(self.reference, reader="attn")
                self.reader = ReferenceBank(unet, reader="attn", style_fidelity=0.0)
                self.writer.attach()
                self.reader.attach()
            if self.ip is not None:
                self.ip.patch(components)
                for m in self.ip.modules():
                    m.requires_grad_(False)
        except Exception:
            self.detach(components)
            raise

    def detach(self, components) -> None:
        unet = components.unet
        if self._replaced_conv is None:
            return
        self._state = self.state_dict_plain()
        if self.ip is not None and self.ip.components is not None:
            self.ip.unpatch()
        for bank in (self.reader, self.writer):
            if bank is not None:
                bank.detach()
        self.reader = self.writer = None
        if self.lora is not None and self.lora.components is not None:
            self.lora.detach()
        if self._base:
            unet.load_state_dict(self._base, strict=False)
            self._base = {}
        restore_conv_in(unet, self._replaced_conv)
        self._replaced_conv = None
        self._cache = None

    def set_scale(self, scale: float) -> None:
        self.scale = scale
        if self.reader is not None:
            self.reader.scale = 1.0 if scale > 0 else 0.0
        if self.ip is not None:
            self.ip.set_scale(self.config.ip_scale if scale > 0 else 0.0)

    # ------------------------------------------------------------------ weights
    def _load_full(self, unet, full: dict[str, torch.Tensor]) -> None:
        own = unet.state_dict()
        bad = sorted(set(own) ^ set(full))
        if bad:
            what = self.source_file or "the TryonNet"
            raise IncompatibleError(f"{what} does not match this base's UNet ({len(bad)} keys differ, e.g. "
                                    f"{bad[0]}); use one made for this base.")  # fmt: skip
        for k, v in full.items():
            if own[k].shape != v.shape:
                raise IncompatibleError(f"{self.source_file or 'the TryonNet'} is for a base of other widths ({k}: "
                                        f"{tuple(v.shape)} vs {tuple(own[k].shape)}).")  # fmt: skip
        with torch.no_grad():
            for k, v in full.items():
                own[k].copy_(v.to(own[k]))

    def _apply_state(self) -> None:
        conv = {k[len(CONV) :]: v for k, v in self._state.items() if k.startswith(CONV)}
        lora = {k[len(LORA) :]: v for k, v in self._state.items() if k.startswith(LORA)}
        unet = self.components.unet
        if conv:
            w = conv["weight"]
            if tuple(w.shape) != tuple(unet.conv_in.weight.shape):
                raise IncompatibleError(
                    f"{self.source_file or 'the ref_unet weights'} have conv_in {tuple(w.shape)} but this base's "
                    f"13-channel conv_in is {tuple(unet.conv_in.weight.shape)}; use weights made for this base."
                )
            with torch.no_grad():
                unet.conv_in.weight.copy_(w.to(unet.conv_in.weight))
                unet.conv_in.bias.copy_(conv["bias"].to(unet.conv_in.bias))
        if lora:
            if set(specs_from_state(lora)) != set(self.lora.specs):
                raise IncompatibleError(f"{self.source_file or 'the ref_unet weights'} adapt other modules than "
                                        f"this configuration; use weights made for this base.")  # fmt: skip
            self.lora.load_state_dict(lora)

    def state_dict_plain(self) -> dict[str, torch.Tensor]:
        if self._replaced_conv is None:
            return dict(self._state)
        unet = self.components.unet
        if self._base:
            return {FULL + k: v.detach().cpu().clone() for k, v in unet.state_dict().items()}
        out = {CONV + k: v.detach().cpu().clone() for k, v in unet.conv_in.state_dict().items()}
        out.update({LORA + k: v.cpu() for k, v in self.lora.state_dict().items()})
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``ref_unet.conv_in.*`` (the 13-channel conv) and ``ref_unet.lora.unet.<module>.lora_A/B.weight`` /
        ``.alpha`` (core LoRA's canonical keys); a TryonNet read from an official folder: ``ref_unet.unet.*``."""
        return {f"{self.name}.{k}": v for k, v in self.state_dict_plain().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        prefix = f"{self.name}."
        self._state = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
        if self._replaced_conv is not None and not self._base:
            self._apply_state()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules() for p in m.parameters() if p.requires_grad]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        conv = list(self.components.unet.conv_in.parameters())
        ids = {id(p) for p in conv}
        rest = [p for p in self.trainable_parameters() if id(p) not in ids]
        return [{"params": rest, "lr": lr}, {"params": conv, "lr": lr * self.config.input_lr_scale}]

    # ------------------------------------------------------------------ per-step inputs
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        c = self.components
        with torch.no_grad():
            mean = c.vae.encode(pixels.to(device=c.device, dtype=c.vae.dtype)).latent_dist.mean
        return scale_latents(c.vae.config, mean).to(c.dtype)

    def _warn(self, key: str, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _check(self, imgs: dict[str, Image.Image]) -> torch.Tensor:
        """The mask (1x1xHxW in {0, 1}) after the input checks: one-sentence errors, one warning per kind."""
        scene, ref, mask, shape = imgs["scene"], imgs["reference"], imgs["mask"], imgs.get("shape")
        if mask.size != scene.size:
            raise InputError(f"the try-on mask is {mask.size[0]}x{mask.size[1]} but the scene is "
                             f"{scene.size[0]}x{scene.size[1]}; give a mask of the scene's size.")  # fmt: skip
        m = torch.from_numpy(np.asarray(mask.convert("L")) >= 128).float()[None, None]
        if not m.any():
            raise InputError("the try-on mask is empty (no white pixel); paint the region to repaint white.")
        if shape is not None and shape.size != scene.size:
            raise InputError(f"the try-on shape map is {shape.size[0]}x{shape.size[1]} but the scene is "
                             f"{scene.size[0]}x{scene.size[1]}; give a shape map of the scene's size.")  # fmt: skip
        if ref.size != scene.size:
            self._warn("ref", "ref_unet: the %dx%d reference is resized to the %dx%d scene.", *ref.size, *scene.size)
        if shape is None:
            self._warn("shape", "ref_unet: no shape map given; the mask stands for the object's shape.")
        return m

    def _prepare(self, inputs: dict[str, Any], width: int, height: int) -> tuple:
        """(channels 1x9xhxw, reference latent 1x4xhxw) of an attachment, checked and cached."""
        from tailor.core.images import to_tensor

        imgs = tryon_inputs(inputs)
        key = tuple(id(v) for v in inputs.values()) + (width, height)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        m = self._check(imgs)
        scene, ref = imgs["scene"], imgs["reference"]
        if scene.size != (width, height):
            raise InputError(f"the try-on scene is {scene.size[0]}x{scene.size[1]} but the output is "
                             f"{width}x{height}; pass --width {scene.size[0]} --height {scene.size[1]}.")  # fmt: skip
        shape = imgs.get("shape") or imgs["mask"].convert("RGB")
        size = (height, width)
        px = torch.stack([to_tensor(scene), to_tensor(shape), to_tensor(ref, size)])
        px[0] = px[0] * (m[0] < 0.5)
        lat = self._encode(px)
        small = F.interpolate(m, size=lat.shape[-2:]).to(lat)
        out = (torch.cat([small, lat[:1], lat[1:2]], dim=1), lat[2:3])
        self._cache = (key, out, list(inputs.values()))  # the inputs kept alive: their ids stay unique
        return out

    def encode(self, cond, inputs: dict[str, Any]):
        if "ref_pixel_values" in inputs:  # training: each row's reference
            if self.ip is None or self.scale <= 0:
                return cond
            return self.ip.encode(cond, {"pixel_values": inputs["ref_pixel_values"]})
        imgs = tryon_inputs(inputs)
        self._check(imgs)  # bad inputs fail here, before the first step
        if self.ip is None or self.scale <= 0:
            return cond
        return self.ip.encode(cond, {"ip_image": imgs["reference"]})

    def step_kwargs(self, state: StepState) -> StepExtras | None:
        if state.training:
            ch = self._training_channels(state.inputs)
        else:
            f = self.components.vae_scale_factor
            h, w = state.latents.shape[-2:]
            ch = self._prepare(state.inputs, w * f, h * f)[0].repeat(state.cond.batch_size, 1, 1, 1)
        return StepExtras(input_channels=ch.to(state.latents.device, state.latents.dtype))

    def _training_channels(self, inputs: dict[str, Any]) -> torch.Tensor:
        mask = inputs["tryon_mask"]
        b = mask.shape[0]
        lat = self._encode(torch.cat([inputs["masked_pixel_values"], inputs["shape_pixel_values"]]))
        small = F.interpolate(mask.to(lat), size=lat.shape[-2:])
        return torch.cat([small, lat[:b], lat[b:]], dim=1)

    def before_unet(self, state: StepState) -> None:
        """GarmentNet on the clean reference latent at this step's t; TryonNet's self-attention reads its banks."""
        if self.reader is None:
            return
        self.reader.clear()
        if self.scale <= 0:
            return
        cond = state.cond
        b = cond.batch_size
        if state.training:
            x0 = self._encode(state.inputs["ref_pixel_values"])
        else:
            f = self.components.vae_scale_factor
            h, w = state.latents.shape[-2:]
            x0 = self._prepare(state.inputs, w * f, h * f)[1].repeat(b, 1, 1, 1)
        hidden = cond.encoder_hidden_states[-b:]  # the prompt rows (official: the garment's own caption)
        added = {k: v[-b:] for k, v in cond.added_cond_kwargs.items()} if cond.added_cond_kwargs else None
        t = state.timestep
        run_reference_pass([self.writer], self.reference, x0.to(state.latents.dtype), t, hidden, added)
        feats = self.writer.features
        if cond.cfg:  # the official pipeline: zero garment features for the unconditional rows
            feats = {k: torch.cat([torch.zeros_like(v), v]) for k, v in feats.items()}
        self.reader.features = dict(feats)
        self.reader.groups = 1
        self.reader.mode = "read"
        self.writer.clear()

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        from tailor.methods.ref_unet.data import TryOnItems

        data = str(getattr(config, "data", ""))
        if not data.startswith("world"):
            raise ConfigError(f"ref_unet trains on world try-on cases; got --data {data!r}, use --data world:pair.")
        size = getattr(config, "resolution", None) or self.components.default_size
        return TryOnItems(len(dataset), size, int(config.seed), self.config.mask_margin)

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path) -> Path:
        """``ref_unet.safetensors`` (conv_in + LoRA, tailor metadata); :func:`.formats.write_official` writes the
        official folder (``unet`` with 13 input channels, ``unet_encoder``, ``image_encoder``)."""
        return super().save(out_dir)

    @classmethod
    def sniff(cls, path: Path, metadata: dict[str, str]) -> bool:
        from tailor.methods.ref_unet import formats

        return formats.sniff(path)

    @classmethod
    def from_file(cls, path: str | Path) -> RefUnetMethod:
        from tailor.core.io import read_metadata

        p = Path(path)
        if p.suffix == ".safetensors" and read_metadata(p).get("format") == "tailor":
            return super().from_file(p)
        from tailor.methods.ref_unet import formats

        return formats.read_official(p, cls)
