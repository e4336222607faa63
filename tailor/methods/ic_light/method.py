"""IC-Light (Zhang, Rao, Agrawala, ICLR 2025): relighting by concatenating a foreground's (and a background's)
latents to the UNet input, the whole UNet fine-tuned; its files are offsets over the base UNet.

The method widens ``conv_in`` by 4 (fc) or 8 (fbc) channels through the core hook
(:mod:`tailor.core.input_channels`), then adds its offsets to every UNet weight (``merged = base + offset``, the
official format, :mod:`.formats`); ``unpatch`` restores the base exactly (a CPU copy of its weights is kept while the
method is attached). Per UNet call it supplies the latents of the prepared foreground (and background)
(:mod:`.prepare`), one row per image, repeated over both classifier-free-guidance halves as the official demo does.
The initial latent is the pipeline's: text-to-image, or ``--init-image`` (e.g. a light-direction gradient) with
``--strength`` (the demo's "lowres denoise").

Training (:mod:`.data`, :mod:`.consistency`): on ``world:light`` data every item is a lit triplet of one scene (lights
``A``, ``B`` and ``A + B``, the foreground lit by a fourth light set on grey); the three rows share noise and timestep,
the loss is the epsilon (or v) MSE over all rows plus ``consistency_weight`` times the light-transport consistency
term, and a small combiner (saved in tailor's file, not in the official one) is trained with the UNet. Other data has
no pairs: the target is its own foreground (blended by the item's mask if it has one) and nothing relights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.conditioning import Conditioning, StepExtras, StepState
from tailor.core.input_channels import restore_conv_in, unet_in_channels, widen_conv_in
from tailor.core.io import load_tensors, meta_json, read_metadata
from tailor.core.method import Method
from tailor.core.unet_delta import UNetDelta, dense_offsets, is_compact
from tailor.errors import ConfigError, FormatError, IncompatibleError, InputError
from tailor.methods.ic_light import data, formats
from tailor.methods.ic_light.config import IcLightConfig
from tailor.methods.ic_light.consistency import Combiner, consistency_loss, predicted_clean
from tailor.methods.ic_light.light_words import LightWords, build_light_words
from tailor.methods.ic_light.prepare import background_array, encode_mode, foreground_array, to_model_range

log = logging.getLogger("tailor")
COMBINER = "combiner."  # tailor-file keys of the consistency combiner (training only)
DELTA = "delta."  # tailor-file keys of the compact UNet delta (``unet_rank`` > 0: tailor.core.unet_delta)
LIGHT = "light_words."  # tailor-file keys of the fc light words' vectors (``light_words``; not in the official file)


class IcLightMethod(Method):
    """fc / fbc relighting: extra input channels + the whole UNet's offsets."""

    name = "ic_light"
    widens_input = True  # its conv_in takes the inputs' extra channels
    config_cls = IcLightConfig
    default_lr: ClassVar[float] = 1e-4  # the tiny world model; the paper fine-tunes SD1.5 at ~1e-5

    def __init__(self, config: IcLightConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self._offsets: dict[str, torch.Tensor] | None = None  # loaded, applied on attach
        self._base: dict[str, torch.Tensor] = {}  # the widened base UNet's weights (CPU), while attached
        self._replaced_conv: nn.Conv2d | None = None
        self._cache: tuple | None = None
        self.combiner: Combiner | None = None
        self._combiner_state: dict[str, torch.Tensor] = {}  # loaded before the combiner is built
        self.light_words: LightWords | None = None  # fc with ``light_words`` on a one-encoder base (built)
        self._light_state: dict[str, torch.Tensor] = {}  # loaded before the light words are built
        self._abar: torch.Tensor | None = None  # the training schedule's alpha-bar (consistency loss)
        rank = self.config.unet_rank
        self._delta = UNetDelta(rank, name="ic_light_delta") if rank else None  # the compact form (unet_rank > 0)

    @property
    def input_channels(self) -> int:  # type: ignore[override]
        latent = int(self.components.vae.config.latent_channels) if self.components is not None else 4
        return latent * self.config.condition_images

    @property
    def text_context(self) -> str:  # type: ignore[override]
        return "edits" if self._light_words_on() else ""  # the light words re-encode the prompt

    def _light_words_on(self) -> bool:
        return self.config.light_words and self.config.mode == "fc"

    # ------------------------------------------------------------------ attach / detach
    def modules(self) -> list[nn.Module]:
        if self.components is None:
            return []
        own = [m for m in (self.combiner, self.light_words) if m is not None]
        return [self.components.unet] + own

    def build(self, components) -> None:
        """The consistency combiner (only when the loss is on; it is not part of the official file) and the fc
        light words (``light_words``; a base with two text encoders gets none, and the run says so)."""
        if self.config.consistency_weight > 0:
            self.combiner = Combiner(int(components.vae.config.latent_channels))
            if self._combiner_state:
                self.combiner.load_state_dict(self._combiner_state)
        if self._light_words_on():
            source = self.source_file or "the IC-Light file"
            self.light_words = build_light_words(components, self._light_state, source)

    def attach(self, components) -> None:
        if self._base:  # attached already (e.g. trained, then sampled through a pipeline)
            return
        unet = components.unet
        latent = int(components.vae.config.latent_channels)
        if unet_in_channels(unet) != latent:
            raise IncompatibleError(
                f"IC-Light widens a plain UNet ({latent} input channels); this base's takes {unet_in_channels(unet)} "
                f"(an inpainting base?) — attach it to a plain base."
            )
        self._replaced_conv = widen_conv_in(unet, self.input_channels)
        self._base = {k: v.detach().to("cpu", copy=True) for k, v in unet.state_dict().items()}
        if self._offsets is not None:
            try:
                self._apply(unet, self._offsets)
            except IncompatibleError:
                self.detach(components)
                raise
        unet.requires_grad_(True)

    def _apply(self, unet, offsets: dict[str, torch.Tensor]) -> None:
        own = unet.state_dict()
        # a compact file names only what it changes (the rest is zero); the official file names every key
        missing = [] if self._compact() else sorted(set(own) - set(offsets))
        unknown = sorted(set(offsets) - set(own))
        source = self.source_file or "the IC-Light offsets"
        if unknown or missing:
            key = (unknown or missing)[0]
            raise IncompatibleError(
                f"{source} does not match this base's UNet ({len(unknown)} unknown and {len(missing)} missing keys, "
                f"e.g. {key}); use offsets made for this base."
            )
        for k, v in offsets.items():
            if own[k].shape != v.shape:
                raise IncompatibleError(
                    f"{source} is for a base of other widths ({k} has shape {tuple(v.shape)}, this base's "
                    f"{tuple(own[k].shape)}); use offsets made for this base."
                )
        with torch.no_grad():
            for k, v in offsets.items():
                own[k].add_(v.to(own[k]))

    def _compact(self) -> bool:
        return self._delta is not None and (self._delta.training or bool(self._delta.state_dict()))

    def _start_delta(self) -> None:
        """Training with ``unet_rank``: the UNet back to the (widened) base, the LoRA and the full tensors injected
        over it and loaded with the compact weights held (a resumed run)."""
        if self._delta.training:
            return
        if self._offsets is not None and not self._delta.state_dict():
            raise ConfigError(
                f"unet_rank={self.config.unet_rank} trains a compact delta from the base; these weights are full "
                f"offsets — train them further with unet_rank=0, or start from the base."
            )
        self.components.unet.load_state_dict(self._base)
        self._delta.start(self.components)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The whole UNet (and the combiner); with ``unet_rank`` the full tensors and the LoRA (injected here, which
        only the trainer asks for)."""
        if self._delta is None:
            return super().trainable_parameters()
        self._start_delta()
        own = [p for m in (self.combiner, self.light_words) if m is not None for p in m.parameters()]
        return self._delta.parameters() + own

    def detach(self, components) -> None:
        unet = components.unet
        if self._delta is not None:
            self._delta.stop()  # the base's modules and values back; the trained weights kept compact
        if self._base:
            self._offsets = self.state_dict_plain()
            unet.load_state_dict(self._base)
            self._base = {}
        if self._replaced_conv is not None:
            restore_conv_in(unet, self._replaced_conv)
            self._replaced_conv = None
        unet.requires_grad_(False)
        self._cache = None

    # ------------------------------------------------------------------ the prompt's light words
    def encode(self, cond: Conditioning, inputs: dict[str, Any]) -> Conditioning:
        """fc with light words: the prompts that hold a light phrase re-encoded through the light vectors (the other
        rows, and the unconditional half, are the base's encoding as they came)."""
        return cond if self.light_words is None else self.light_words.reencode(self.components, cond)

    # ------------------------------------------------------------------ the condition latents
    def _latents(self, foreground: Any, background: Any, height: int, width: int, mask: Any = None) -> torch.Tensor:
        arrays = [foreground_array(foreground, width, height, mask)]
        if self.config.mode == "fbc":
            if background is None:
                raise InputError("an fbc IC-Light model needs a background image; pass --ic-light MODEL=FG+BG.")
            arrays.append(background_array(background, width, height))
        lat = encode_mode(self.components.vae, to_model_range(arrays))
        return torch.cat(list(lat.split(1)), dim=1)  # [fg | bg] along channels (the fbc demo)

    def step_kwargs(self, state: StepState) -> StepExtras | None:
        c = self.components
        if state.training:
            return StepExtras(input_channels=self._training_latents(state.inputs).to(state.latents.dtype))
        fg, bg = _references(state.inputs)
        mask = state.inputs.get("foreground_mask")
        f = c.vae_scale_factor
        h, w = state.latents.shape[-2] * f, state.latents.shape[-1] * f
        key = (id(fg), id(bg), id(mask), h, w)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._latents(fg, bg, h, w, mask), fg, bg, mask)  # keep them alive: ids stay unique
        lat = self._cache[1].to(state.latents.device, state.latents.dtype)
        return StepExtras(input_channels=lat.repeat(state.cond.batch_size, 1, 1, 1))

    def _training_latents(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The foreground (and background) latents of each training row; a triplet's foreground is encoded once."""
        c = self.components
        pixels = inputs["pixel_values"]
        fg = inputs.get("foreground")
        if fg is None:  # no pairs: the target on grey, blended by its mask (the demo's preparation) when it has one
            m = inputs.get("mask")
            fg = pixels if m is None else pixels * m.to(pixels)
        n = inputs.get("triplets")
        if n:
            lat = encode_mode(c.vae, fg[:n].to(c.vae.dtype)).repeat(3, 1, 1, 1)
        else:
            lat = encode_mode(c.vae, fg.to(c.vae.dtype))
        parts = [lat]
        if self.config.mode == "fbc":
            bg = inputs.get("background", torch.zeros_like(pixels))
            parts.append(encode_mode(c.vae, bg.to(c.vae.dtype)))
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        """World lit data -> lit triplets (:mod:`.data`); other data is used as it is (no relighting is learned)."""
        found = data.lit_world(dataset)
        if found is not None:
            return data.LitTriplets(*found, mode=self.config.mode)
        log.warning(
            "IC-Light: training data %r has no lit pairs, so each image is its own foreground and no relighting is "
            "learned; train on --data world:light for the paper's relighting pairs",
            getattr(config, "data", "?"),
        )
        return dataset

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """conv_in at ``lr * input_lr_scale`` (its widened input starts at zero), every other weight at ``lr``."""
        conv = list(self.components.unet.conv_in.parameters())
        words = list(self.light_words.parameters()) if self.light_words is not None else []
        if self.config.input_lr_scale == 1.0 and not words:
            return super().param_groups(lr)
        ids = {id(p) for p in conv + words}
        rest = [p for p in self.trainable_parameters() if id(p) not in ids]
        groups = [{"params": rest, "lr": lr}, {"params": conv, "lr": lr * self.config.input_lr_scale}]
        if words:
            groups.append({"params": words, "lr": lr * self.config.light_words_lr_scale})
        return groups

    def expand_batch(self, batch, keys, positions):
        """Trainer hook: B lit triplets -> 3B rows sharing noise and timestep per triplet (:func:`.data.expand`)."""
        return data.expand(batch, keys, positions)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, state: StepState, weights: torch.Tensor | None):
        """The MSE over every row plus ``consistency_weight`` x the light-transport consistency (lit triplets)."""
        loss, logs = super().loss(pred, target, state, weights)
        n = int(state.inputs.get("triplets") or 0) if state is not None else 0
        if not n or self.combiner is None or self.config.consistency_weight <= 0:
            return loss, logs
        kind = self.components.scheduler.config.get("prediction_type", "epsilon")
        abar = self._alphas_cumprod(pred.device)[state.timestep]
        x0 = predicted_clean(state.latents, pred, abar, kind)
        valid = None
        if self.config.mode == "fc":  # the light is in the text: rows whose caption was dropped have none
            prompts = list(state.cond.prompts or [])
            if len(prompts) == 3 * n:
                valid = torch.tensor([bool(p) for p in prompts[2 * n :]])
        term = consistency_loss(x0, abar, state.inputs["mask"], n, self.combiner, valid)
        logs["consistency"] = float(term.detach())
        return loss + self.config.consistency_weight * term, logs

    def _alphas_cumprod(self, device) -> torch.Tensor:
        """The training schedule's alpha-bar (the base scheduler's betas, as the trainer's DDPM schedule)."""
        from diffusers import DDPMScheduler

        if self._abar is None:
            self._abar = DDPMScheduler.from_config(self.components.scheduler.config).alphas_cumprod
        return self._abar.to(device)

    # ------------------------------------------------------------------ weights and files
    def state_dict_plain(self) -> dict[str, torch.Tensor]:
        """The offsets over the base UNet (official keys): the attached UNet minus the base, else the loaded ones."""
        if self._compact():
            dense = dense_offsets(self._delta.state_dict())
            if not self._base:
                return dense  # only the keys it changes; attach it to a base for the official file's every key
            return {k: dense[k].to(v.dtype) if k in dense else torch.zeros_like(v) for k, v in self._base.items()}
        if not self._base:
            return dict(self._offsets or {})
        own = self.components.unet.state_dict()
        return {k: (own[k].detach().cpu() - v) for k, v in self._base.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The offsets (``ic_light.<unet key>``) and, when training with the consistency loss, the combiner
        (``ic_light.combiner.*``: a resumed run needs it; the official file leaves it out)."""
        if self._compact():
            out = {f"{self.name}.{DELTA}{k}": v for k, v in self._delta.state_dict().items()}
        else:
            out = {f"{self.name}.{k}": v for k, v in self.state_dict_plain().items()}
        comb = self.combiner.state_dict() if self.combiner is not None else self._combiner_state
        out.update({f"{self.name}.{COMBINER}{k}": v.detach().cpu() for k, v in comb.items()})
        words = self.light_words.state() if self.light_words is not None else self._light_state
        out.update({f"{self.name}.{LIGHT}{k}": v.detach().cpu() for k, v in words.items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        prefix = f"{self.name}."
        offsets = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
        comb = {k[len(COMBINER) :]: offsets.pop(k) for k in list(offsets) if k.startswith(COMBINER)}
        words = {k[len(LIGHT) :]: offsets.pop(k) for k in list(offsets) if k.startswith(LIGHT)}
        if words:
            self._light_state = words
            if self.light_words is not None:
                self.light_words.load(words, self.source_file or "the IC-Light file")
        if comb:
            self._combiner_state = comb
            if self.combiner is not None:
                self.combiner.load_state_dict(comb)
        compact = {k[len(DELTA) :]: offsets.pop(k) for k in list(offsets) if k.startswith(DELTA)}
        if compact:
            if offsets or not is_compact(compact):
                raise FormatError(
                    f"{self.source_file or 'the IC-Light file'} mixes full and compact offsets; it is "
                    f"damaged — save it again."
                )
            if self._delta is None:  # a compact file read with other options: its own rank
                rank = next(v.shape[0] for k, v in compact.items() if k.endswith(".lora_A.weight"))
                self._delta = UNetDelta(int(rank), name="ic_light_delta")
            self._delta.load_state_dict(compact)
            if self._delta.training:
                return
            offsets = dense_offsets(compact)
        if self._base:  # attached: re-base on the original weights
            unet = self.components.unet
            unet.load_state_dict(self._base)
            self._apply(unet, offsets)
        else:
            self._offsets = offsets

    def save(self, out_dir: str | Path) -> Path:
        """``ic_light.safetensors`` (tailor metadata) and ``iclight_<mode>.safetensors`` (the official layout).

        The attached weights are first set to ``base + offset`` (a rounding step of at most one float ulp), so a file
        loaded onto the base reproduces this model bit for bit."""
        if self._base and not self._compact():
            offsets = self.state_dict_plain()
            own = self.components.unet.state_dict()
            with torch.no_grad():
                for k, v in self._base.items():
                    own[k].copy_(v.to(own[k]) + offsets[k].to(own[k]))
        path = super().save(out_dir)
        formats.write_offsets(Path(out_dir) / f"iclight_{self.config.mode}.safetensors", self.state_dict_plain())
        return path

    @classmethod
    def sniff(cls, path: Path, metadata: dict[str, str]) -> bool:
        return formats.sniff(path, metadata)

    @classmethod
    def from_file(cls, path: str | Path) -> IcLightMethod:
        """A tailor file or an official offsets file (fc / fbc read from ``conv_in.weight``)."""
        meta = read_metadata(path)
        tensors = load_tensors(path)
        if meta.get("format") == "tailor":
            options = meta_json(meta, "config", {})
            # a file saved before the light words (or without them) reads the prompt as the base does
            options.setdefault("light_words", any(k.startswith(f"{cls.name}.{LIGHT}") for k in tensors))
            config = cls.config_cls.from_dict(options, source=str(path))
        else:  # the official offsets: UNet weights only
            config = cls.config_cls(mode=formats.mode_of(tensors, path), light_words=False)
        method = cls(config)
        method.load_state_dict(tensors)
        return method


def _references(inputs: dict[str, Any]) -> tuple[Any, Any]:
    """(foreground, background) from the attachment's inputs: ``foreground`` (one path or image, or a list of two:
    foreground and background) and an optional ``background``."""
    fg, bg = inputs.get("foreground"), inputs.get("background")
    if isinstance(fg, list | tuple):
        if len(fg) > 2 or not fg:
            raise ConfigError(f"IC-Light takes a foreground and at most one background; got {len(fg)} images.")
        fg, bg = fg[0], (fg[1] if len(fg) == 2 else bg)
    if fg is None:
        raise InputError("IC-Light needs a foreground image; pass --ic-light MODEL=FG[+BG] or --foreground IMG.")
    return fg, bg
