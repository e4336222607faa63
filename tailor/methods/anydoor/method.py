"""AnyDoor (Chen et al., CVPR 2024): place an object (background removed) into a scene's box, zero-shot.

**ID extractor**: the object square (:mod:`~tailor.methods.anydoor.hf`) -> the frozen world CLIP vision tower
(the official uses DINOv2-g) -> class token + patch tokens after the final layer norm -> a trained ``projector``
(Linear, vision width -> cross-attention width) = the *whole* cross-attention context of the UNet and of the detail
branch; the text prompt is not read. CFG's unconditional rows get the tokens of an all-zero image (official).

**Detail extractor**: a ControlNet (diffusers ``ControlNetModel.from_unet`` with a 4-channel hint) whose hint is the
collage: the scene with the box replaced by the object's high-frequency map (the official ``sobel``,
:func:`~tailor.methods.anydoor.hf.hf_map`) resized into it, plus the box as a mask channel. Its residuals are added
to the UNet's skips (scaled by the attachment weight x ``conditioning_scale``).

**UNet decoder**: trained with the branch. ``decoder="lora"`` (default) trains a LoRA (:mod:`tailor.core.lora`) on
every attention / feed-forward / projection / ResNet-conv layer of ``up_blocks`` (a low-rank delta: the shipped
world weights must fit 5 MB); ``"full"`` trains and saves every decoder weight (``up_blocks``, ``conv_norm_out``,
``conv_out``: what an official checkpoint holds), put into the base on attach and restored on detach; ``"frozen"``.

**Training** (``tailor train anydoor --data world:pair``): pairs from
:class:`~tailor.methods.anydoor.data.AnyDoorPairs`; timesteps as the official ``sample_timestep``: 30% uniform, else
[T/2, T) for pairs with a large pose change, [0, T/2) for still-image pairs (the target's own object), uniform for
the rest. Loss: eps-MSE. Trained: projector, ControlNet, decoder (LoRA or full); the encoder and the rest of the UNet
stay frozen.

Files: ``anydoor.safetensors`` (tailor metadata; ``projector.*``, ``controlnet.<diffusers key>``,
``unet_lora.<canonical LoRA key>`` or ``unet_decoder.<diffusers key>``); :meth:`save_official` / ``tailor.load`` of
an official checkpoint (``model.diffusion_model.*``, ``control_model.*``, ``cond_stage_model.projector.*``:
:mod:`.formats`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tailor.core.components import load_image_encoder
from tailor.core.conditioning import StepExtras, StepState
from tailor.core.control import control_batch, controlnet_from_unet, hint_channels
from tailor.core.io import load_tensors, meta_json, read_metadata, save_tensors
from tailor.core.lora import LoRA, find_targets
from tailor.core.method import ARTIFACT_FORMAT, Method, load_module_state
from tailor.errors import FormatError, IncompatibleError, InputError
from tailor.methods.anydoor import formats
from tailor.methods.anydoor.config import AnyDoorConfig
from tailor.methods.anydoor.data import AnyDoorPairs, hint_at, prepare

_ids = itertools.count()
DECODER = ("up_blocks.", "conv_norm_out.", "conv_out.")
LORA_GROUPS = ("attention", "ff", "proj", "conv")


def decoder_params(unet) -> dict[str, nn.Parameter]:
    """The UNet decoder's parameters by their plain diffusers key (inside peft wrappers: the base layer's)."""
    out = {}
    for k, p in unet.named_parameters():
        if ".lora_" in k:
            continue
        k = k.replace(".base_layer.", ".")
        if k.startswith(DECODER):
            out[k] = p
    return out


class AnyDoorMethod(Method):
    """Attach with ``pipe.attach(method, object=IMG, scene=IMG, box="x0,y0,x1,y1"[, object_mask=MASK])``."""

    name = "anydoor"
    text_context = "replaces"  # the ID tokens are the whole cross-attention context
    config_cls = AnyDoorConfig
    default_lr: ClassVar[float] = 1e-5  # the official learning rate (the world recipe uses more)

    def __init__(self, config: AnyDoorConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.projector: nn.Linear | None = None
        self.controlnet: nn.Module | None = None
        self.lora: LoRA | None = None
        self.encoder = self.processor = None
        self._official: dict[str, torch.Tensor] | None = None  # an official checkpoint waiting for the base
        self._decoder_kept: dict[str, torch.Tensor] | None = None  # the base's decoder while full weights are in
        self._decoder_state: dict[str, torch.Tensor] | None = None  # full decoder weights (saved / to put in)
        self._dynamic: list[int] = []  # the current micro-batch's timestep classes, in draw order
        self._prepared: tuple[int, dict[str, Any]] | None = None  # (id of the inputs, prepared inputs)
        self._seed = 0

    def modules(self) -> list[nn.Module]:
        if not self._built:
            return []
        lora = self.lora.modules() if self.lora is not None and self.lora.components is not None else []
        return [self.projector, self.controlnet, *lora]

    # ------------------------------------------------------------------ build / attach
    def build(self, components) -> None:

        c = self.config
        if components.is_sdxl:
            raise IncompatibleError(
                "AnyDoor is built for SD1.x/SD2-style bases (one text encoder); this base is SDXL."
            )
        unet = components.unet
        self.encoder, self.processor = load_image_encoder(c.image_encoder, components.device)
        width = int(self.encoder.config.hidden_size)
        self.projector = nn.Linear(width, int(unet.config.cross_attention_dim))
        self.controlnet = controlnet_from_unet(
            unet,
            int(components.vae.config.latent_channels),
            conditioning_channels=4,
            conditioning_embedding_out_channels=hint_channels(components.vae_scale_factor),
        )
        self.controlnet.to(dtype=unet.dtype).eval()
        self.projector.to(dtype=unet.dtype).eval()
        if c.decoder == "lora":
            specs = {k: (c.rank, c.lora_alpha) for k in find_targets(components, LORA_GROUPS)
                     if k.startswith("unet.up_blocks.")}  # fmt: skip
            self.lora = LoRA(f"tailor_anydoor_{next(_ids)}", specs)
        if self._official is not None:
            official, self._official = self._official, None
            self._pending_state = formats.from_official(official, self.controlnet, unet, components.vae_scale_factor)

    def attach(self, components) -> None:
        if self.lora is not None:
            self.lora.attach(components)
            self.lora.set_scale(self.scale)
            pending = getattr(self, "_pending_lora", None)
            if pending is not None:
                self.lora.load_state_dict(pending)
                self._pending_lora = None
        if self.config.decoder == "full":
            params = decoder_params(components.unet)
            self._decoder_kept = {k: p.detach().clone() for k, p in params.items()}
            if self._decoder_state is not None:
                self._put_decoder(self._decoder_state)

    def detach(self, components) -> None:
        if self.lora is not None and self.lora.components is not None:
            self._pending_lora = self.lora.state_dict()
            self.lora.detach()
        if self._decoder_kept is not None:
            self._decoder_state = self._decoder_weights()
            params = decoder_params(components.unet)
            with torch.no_grad():
                for k, v in self._decoder_kept.items():
                    params[k].copy_(v)
                    params[k].requires_grad_(False)
            self._decoder_kept = None
        self._prepared = None

    def _put_decoder(self, state: dict[str, torch.Tensor]) -> None:
        params = decoder_params(self.components.unet)
        load_module_state(_Holder(params), state, "anydoor unet_decoder")
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v.to(params[k]))

    def _decoder_weights(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().clone() for k, p in decoder_params(self.components.unet).items()}

    def set_scale(self, scale: float) -> None:
        self.scale = float(scale)
        if self.lora is not None and self.lora.components is not None:
            self.lora.set_scale(scale)

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.projector.parameters()) + list(self.controlnet.parameters())
        if self.lora is not None:
            params += self.lora.parameters()
        elif self.config.decoder == "full":
            params += list(decoder_params(self.components.unet).values())
        for p in params:
            p.requires_grad_(True)
        return params

    # ------------------------------------------------------------------ ID tokens
    def id_tokens(self, objects: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) objects in [0, 1] -> (B, 1 + patches, cross-attention width): class + patch tokens after the
        tower's final layer norm, through the projector (gradients reach the projector only)."""
        enc = self.encoder
        size = int(enc.config.image_size)
        p = next(enc.parameters())
        x = objects.to(p.device, torch.float32)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.tensor(self.processor.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.processor.image_std, device=x.device).view(1, 3, 1, 1)
        with torch.no_grad():
            vm = enc.vision_model
            h = vm.post_layernorm(vm(pixel_values=((x - mean) / std).to(p.dtype)).last_hidden_state)
        return self.projector(h.to(self.projector.weight.dtype))

    def _inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        key = id(inputs)
        if self._prepared is None or self._prepared[0] != key:
            if inputs.get("object") is None:
                raise InputError("anydoor needs the object to place; pass --object IMG (or --anydoor MODEL=IMG).")
            self._prepared = (key, prepare(inputs, bool(self.config.detail)))
        return self._prepared[1]

    def encode(self, cond, inputs: dict[str, Any]):
        training = "anydoor_object" in inputs
        objects = inputs["anydoor_object"] if training else self._inputs(inputs)["object"]
        tokens = self.id_tokens(objects)
        b = cond.batch_size
        if tokens.shape[0] == 1 and b > 1:
            tokens = tokens.expand(b, -1, -1)
        if cond.cfg:
            tokens = torch.cat([self.id_tokens(torch.zeros_like(objects[:1])).expand(b, -1, -1), tokens])
        cond.encoder_hidden_states = tokens.to(cond.encoder_hidden_states.dtype)
        return cond

    # ------------------------------------------------------------------ the step
    def step_kwargs(self, state: StepState) -> StepExtras | None:
        if state.training:
            hint = state.inputs["anydoor_hint"]
        else:
            f = self.components.vae_scale_factor
            h, w = (int(s) * f for s in state.latents.shape[-2:])
            hint = hint_at(self._inputs(state.inputs), w, h)
        hint = control_batch(hint.float(), state)
        cn = self.controlnet
        dtype = next(cn.parameters()).dtype
        down, mid = cn(
            state.latents.to(dtype),
            state.timestep,
            encoder_hidden_states=state.cond.encoder_hidden_states.to(dtype),
            controlnet_cond=hint.to(dtype),
            conditioning_scale=float(self.config.conditioning_scale),
            return_dict=False,
        )
        return StepExtras(down_block_additional_residuals=list(down), mid_block_additional_residual=mid)

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        self._seed = int(config.seed)
        return AnyDoorPairs(dataset, self.config, self._seed)

    def expand_batch(self, batch, keys, positions):
        """Remember each row's timestep class for :meth:`sample_timesteps` (called once per row, in order)."""
        dyn = batch.get("anydoor_dynamic")
        self._dynamic = [int(v) for v in dyn] if dyn is not None else []
        return batch, keys, positions

    def sample_timesteps(self, batch_size: int, num_train_timesteps: int, generator: torch.Generator) -> torch.Tensor:
        """The official ``sample_timestep``: ``uniform_t`` of the draws uniform, else by the pair's class (1: large
        pose change -> [T/2, T); 0: still-image pair -> [0, T/2); 2: uniform)."""
        kind = self._dynamic.pop(0) if self._dynamic else 2
        n = num_train_timesteps
        if torch.rand((), generator=generator) < self.config.uniform_t:
            lo, hi = 0, n
        else:
            lo, hi = {1: (n // 2, n), 0: (0, n // 2)}.get(kind, (0, n))
        return torch.randint(lo, hi, (batch_size,), generator=generator)

    # ------------------------------------------------------------------ weights and files
    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._built:
            return dict(self._pending_state or {})
        out = {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        out.update({f"controlnet.{k}": v for k, v in self.controlnet.state_dict().items()})
        if self.lora is not None:
            lora = self.lora.state_dict() if self.lora.components is not None else getattr(self, "_pending_lora", {})
            out.update({f"unet_lora.{k}": v for k, v in (lora or {}).items()})
        elif self.config.decoder == "full":
            dec = self._decoder_weights() if self._decoder_kept is not None else (self._decoder_state or {})
            out.update({f"unet_decoder.{k}": v for k, v in dec.items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        parts: dict[str, dict[str, torch.Tensor]] = {"projector": {}, "controlnet": {}, "unet_lora": {},
                                                     "unet_decoder": {}}  # fmt: skip
        for k, v in state.items():
            head, _, rest = k.partition(".")
            if head not in parts:
                raise FormatError(f"anydoor weights hold an unexpected tensor {k}; the file is not an AnyDoor file.")
            parts[head][rest] = v
        load_module_state(self.projector, parts["projector"], "anydoor projector")
        load_module_state(self.controlnet, parts["controlnet"], "anydoor controlnet")
        if self.lora is not None:
            if self.lora.components is not None:
                self.lora.load_state_dict(parts["unet_lora"])
            else:
                self._pending_lora = parts["unet_lora"]
        elif self.config.decoder == "full":
            if not parts["unet_decoder"]:
                raise FormatError("anydoor weights with decoder 'full' hold no unet_decoder tensors; the file is "
                                  "incomplete.")  # fmt: skip
            self._decoder_state = parts["unet_decoder"]
            if self._decoder_kept is not None:
                self._put_decoder(self._decoder_state)

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "model_config": dict(self.controlnet.config) if self.controlnet else {}}

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in the official checkpoint layout (the whole UNet, decoder delta merged)."""
        if not self._built or self.components is None:
            raise RuntimeError("attach AnyDoor to a base first (Pipeline.attach or patch).")
        lora = self.lora.state_dict() if self.lora is not None else None
        return formats.to_official(self.projector, self.controlnet, self.components.unet, lora)

    def save_official(self, path: str | Path) -> Path:
        """Write the official layout (``model.diffusion_model.*``, ``control_model.*``,
        ``cond_stage_model.projector.*``), which ``tailor.load`` reads back (as ``decoder="full"``)."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise InputError(f"{path}: the official layout is written as .safetensors; change the suffix.")
        config = self.config.replace(decoder="full")
        save_tensors(path, self.official_state_dict(), {**self.metadata(), "format": "anydoor-official",
                                                        "config": config.to_dict()})  # fmt: skip
        return path

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        return formats.sniff(path)

    @classmethod
    def from_file(cls, path: str | Path) -> AnyDoorMethod:
        """A tailor ``anydoor.safetensors`` or an official checkpoint (read as ``decoder="full"``)."""
        path = Path(path)
        meta = read_metadata(path) if path.suffix == ".safetensors" else {}
        state = load_tensors(path)
        if meta.get("format") == ARTIFACT_FORMAT:
            method = cls(cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path)))
            method.load_state_dict(state)
            return method
        if not formats.is_official(state):
            raise FormatError(f"{path} is neither a tailor AnyDoor file nor an official AnyDoor checkpoint (no "
                              f"cond_stage_model.projector / control_model tensors).")  # fmt: skip
        config = meta_json(meta, "config", {}) if meta.get("format") == "anydoor-official" else {}
        method = cls(cls.config_cls.from_dict({**config, "decoder": "full"}, source=str(path)))
        method._official = state
        return method


class _Holder(nn.Module):
    """A module whose state dict is ``params`` (for the shape / completeness checks of ``load_module_state``)."""

    def __init__(self, params: dict[str, nn.Parameter]):
        super().__init__()
        self._params = params

    def state_dict(self, *args, **kwargs):  # noqa: D102 - the keys the decoder file must hold
        return {k: p.detach() for k, p in self._params.items()}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):  # noqa: D102 - copied by the caller
        return None
