"""The one denoising loop, with hook points for every attached method.

With no method attached, :meth:`Pipeline.generate` reproduces diffusers' ``StableDiffusionPipeline`` /
``StableDiffusionXLPipeline`` on the same components and seeds (tested to 1e-5). Methods attach with a weight and
a start/end fraction of the schedule; several attach at once (InstantID = an ID adapter + IdentityNet is two
attachments, not a subclass). Per UNet call the pipeline:

1. calls ``set_scale(weight)`` (or ``set_scale(0)`` outside the method's start/end window) on every attachment,
2. collects ``step_kwargs`` from the active ones, scales their residuals by the weight and sums them,
3. calls ``before_unet(state)`` on the active ones (reference passes that fill a reference bank run here, after
   every scale is set, so the pass sees the same patched model),
4. runs the UNet once on the ``[uncond, cond]`` batch (the latents followed by the extra input channels of an
   inpainting base and of the methods that widen ``conv_in``, :mod:`tailor.core.input_channels`) and applies
   classifier-free guidance.

Starting from an image (img2img, inpainting with a 9-channel inpainting UNet or by latent blending with a 4-channel
one) happens in the same loop (:mod:`tailor.core.img2img`) and reproduces diffusers' ``StableDiffusionImg2ImgPipeline``
/ ``StableDiffusionInpaintPipeline`` (tested to 1e-5).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailor.core.conditioning import Conditioning, StepExtras, StepState, merge_extras
from tailor.core.generation import GenerateConfig
from tailor.core.images import to_pil
from tailor.core.img2img import ImageLike, ImageStart, base_layout
from tailor.core.input_channels import per_unet_row, with_channels, zero_channels
from tailor.core.latents import vae_decode
from tailor.core.method import Method
from tailor.core.prompts import encode_prompts
from tailor.core.samplers import make_scheduler
from tailor.errors import ConfigError, FormatError, IncompatibleError


@dataclass
class Attachment:
    """A method attached to a pipeline: its weight, schedule window and inputs (e.g. a control image)."""

    method: Method
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    inputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ConfigError(
                f"{self.method.name}: start/end must satisfy 0 <= start < end <= 1; got {self.start}/{self.end}."
            )

    def active(self, step: int, num_steps: int) -> bool:
        """diffusers' ControlNet convention: active unless step/n < start or (step+1)/n > end."""
        return not (step / num_steps < self.start or (step + 1) / num_steps > self.end)


def unet_kwargs(attachments: list[Attachment], state: StepState) -> dict[str, Any]:
    """Set every attachment's scale for this call, run the active ones' ``before_unet`` and merge their step extras
    (a method that widens the UNet input gets zero channels outside its window)."""
    parts, active = [], []
    for a in attachments:
        on = state.training or a.active(state.step, state.num_steps)
        a.method.set_scale(a.weight if on else 0.0)
        if on:
            active.append(a)
            state.inputs = a.inputs if not state.training else state.inputs
            extras = a.method.step_kwargs(state)
            if extras is not None:
                if extras.input_channels is not None:
                    extras = dataclasses.replace(
                        extras, input_channels=per_unet_row(extras.input_channels, state.cond)
                    )
                parts.append(extras.scaled(a.weight))
        elif a.method.input_channels:
            parts.append(StepExtras(input_channels=zero_channels(state.latents, a.method.input_channels)))
    for a in active:
        if type(a.method).before_unet is not Method.before_unet:
            state.inputs = a.inputs if not state.training else state.inputs
            a.method.before_unet(state)
    kwargs = merge_extras(parts)
    if state.cond.cross_attention_kwargs:
        kwargs["cross_attention_kwargs"] = {
            **state.cond.cross_attention_kwargs,
            **kwargs.get("cross_attention_kwargs", {}),
        }
    return kwargs


def call_unet(
    unet,
    latents: torch.Tensor,
    t,
    cond: Conditioning,
    extra: dict[str, Any],
    base_channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """One UNet call; a method's per-step ``encoder_hidden_states`` / ``added_cond_kwargs`` (in ``extra``) replace
    the prompt's; ``base_channels`` (an inpainting base's mask and masked image) and the methods' extra input channels
    are appended to the latents, in that order."""
    extra = dict(extra)
    hidden = extra.pop("encoder_hidden_states", cond.encoder_hidden_states)
    added = extra.pop("added_cond_kwargs", cond.added_cond_kwargs)
    channels = [x for x in (base_channels, extra.pop("input_channels", None)) if x is not None]
    latents = with_channels(unet, latents, torch.cat(channels, dim=1) if channels else None)
    rows = extra.pop("reference_rows", None)
    if rows is not None:  # a fused reference pass: its rows run in front of the batch (zeros in
        # the extra input channels), their prediction dropped
        from tailor.core.reference_bank import fused_call

        return fused_call(unet, rows, latents, t, hidden, added, extra)
    return unet(
        latents,
        t,
        encoder_hidden_states=hidden,
        added_cond_kwargs=added,
        return_dict=False,
        **extra,
    )[0]


def encode_with_methods(attachments: list[Attachment], cond: Conditioning, batch: dict | None = None) -> Conditioning:
    """Run every attachment's ``encode`` hook in attachment order."""
    for a in attachments:
        cond = a.method.encode(cond, a.inputs if batch is None else batch)
    return cond


def check_pairs(attached: list[Method], new: Method) -> None:
    """Refuse, in one sentence naming both, a method that cannot share the pipeline with one attached before: two
    that widen the UNet's input layout, or one that edits the prompt's text context beside one that replaces it."""
    kinds = {"edits": "edits the prompt's text embeddings", "replaces": "replaces the prompt's text context"}
    for old in attached:
        if old.widens_input and new.widens_input:
            raise IncompatibleError(
                f"{old.name} and {new.name} both widen the UNet's input (conv_in) with channels of their own "
                f"layout, and one UNet takes one layout; use one of them."
            )
        pair = {old.text_context, new.text_context}
        if pair == {"edits", "replaces"} or (old.text_context == new.text_context == "replaces"):
            a, b = sorted((old, new), key=lambda m: m.text_context != "replaces")
            raise IncompatibleError(
                f"{a.name} {kinds[a.text_context]} with a context of its own, so {b.name} (which "
                f"{kinds[b.text_context]}) has nothing to act on; use one of them."
            )


@dataclass
class GenerationResult:
    images: list  # PIL images
    array: np.ndarray  # float NHWC in [0, 1]
    seeds: list[int]
    prompts: list[str]
    settings: dict[str, Any]


class Pipeline:
    """Text-to-image generation over :class:`~tailor.core.components.Components` with attached methods."""

    def __init__(self, components):
        self.components = components
        self.attachments: list[Attachment] = []

    # ------------------------------------------------------------------ methods
    def attach(self, method: Method, weight: float = 1.0, start: float = 0.0, end: float = 1.0, **inputs) -> Pipeline:
        check_pairs([a.method for a in self.attachments], method)
        att = Attachment(method, weight, start, end, inputs)
        try:
            method.patch(self.components)
        except (FormatError, IncompatibleError) as e:
            source = method.source_file
            if source is None or Path(source).name in str(e):
                raise
            raise type(e)(f"{source}: {e}") from e
        self.attachments.append(att)
        return self

    def settings_record(self, config: GenerateConfig) -> dict[str, Any]:
        """What ``generation.json`` records of a call with ``config`` on this pipeline: the settings, the resolved
        size, the base and the attachments."""
        size = self.components.default_size
        width, height = config.width or size, config.height or size
        source, methods = self.components.source, self.describe()
        return config.to_dict() | dict(width=width, height=height, base=source, methods=methods)

    def describe(self) -> list[dict[str, Any]]:
        """The attachments as ``generation.json`` records them: method, source file, weight, start/end."""
        return [
            dict(method=a.method.name, source=str(a.method.source_file), weight=a.weight, start=a.start, end=a.end)
            if a.method.source_file
            else dict(method=a.method.name, weight=a.weight, start=a.start, end=a.end)
            for a in self.attachments
        ]

    def detach(self, method: Method | None = None) -> Pipeline:
        """Detach ``method`` (or every method), restoring the base."""
        for a in list(reversed(self.attachments)):
            if method is None or a.method is method:
                a.method.unpatch()
                self.attachments.remove(a)
        return self

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        prompts: str | list[str],
        config: GenerateConfig | None = None,
        progress: bool = False,
        init_image: ImageLike | None = None,
        mask: ImageLike | None = None,
        **settings,
    ) -> GenerationResult:
        """``n`` images per prompt; image ``i`` uses the seed ``seed + i`` (each one reproducible alone).

        ``settings`` are :class:`~tailor.core.generation.GenerateConfig` fields (``n``, ``seed``, ``steps``,
        ``guidance``, ``sampler``, ``width``, ``height``, ``negative_prompt``, ``eta``, ``strength``) and override
        ``config``. ``init_image`` / ``mask`` (a path, PIL image or uint8 array; paths may also come as the config's
        fields) start from an image: img2img, or inpainting of the mask's white region (:mod:`tailor.core.img2img`).
        """
        config = config or GenerateConfig()
        for key, value in (("init_image", init_image), ("mask", mask)):
            if isinstance(value, str | Path):
                settings[key] = str(value)
        if settings:
            config = GenerateConfig.from_dict({**config.to_dict(), **settings}, source="generation settings")
        init_image = config.init_image if init_image is None or isinstance(init_image, str | Path) else init_image
        mask = config.mask if mask is None or isinstance(mask, str | Path) else mask
        if config.keep_unmasked is not None and mask is None:
            raise ConfigError("--keep-unmasked pastes the init image back outside the mask; pass --mask with it.")
        c = self.components
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ConfigError("no prompt given; pass at least one prompt.")
        n, seed, steps, guidance, eta = config.n, config.seed, config.steps, config.guidance, config.eta
        negative_prompt, sampler = config.negative_prompt, config.sampler
        size = c.default_size
        height, width = config.height or size, config.width or size
        f = c.vae_scale_factor
        if height % f or width % f:
            raise ConfigError(f"width and height must be multiples of {f} for this base; got {width}x{height}.")
        all_prompts = [p for p in prompts for _ in range(n)]
        negatives = None
        if negative_prompt:
            neg = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
            negatives = [neg[i % len(neg)] for i in range(len(prompts)) for _ in range(n)]
        batch = len(all_prompts)
        cfg = guidance > 1.0 and c.unet.config.time_cond_proj_dim is None

        for a in self.attachments:  # adapters inside the text encoder (LoRA) must see their weight when it runs
            a.method.set_scale(a.weight)
        cond = encode_prompts(c, all_prompts, negatives, cfg=cfg, height=height, width=width)
        cond = encode_with_methods(self.attachments, cond)

        scheduler = make_scheduler(sampler, c.scheduler)
        scheduler.set_timesteps(steps, device=c.device)
        timesteps = scheduler.timesteps
        seeds = [seed + i for i in range(batch)]
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        latent_channels = int(c.vae.config.latent_channels)
        shape = (1, latent_channels, height // f, width // f)
        method_channels = sum(a.method.input_channels for a in self.attachments)
        base_extra = base_layout(c.unet, latent_channels, method_channels)
        start = ImageStart.prepare(c, init_image, mask, config.strength, width, height, steps, base_extra)
        if start is None:
            latents = torch.cat([torch.randn(shape, generator=g, dtype=c.dtype) for g in gens]).to(c.device)
            latents = latents * scheduler.init_noise_sigma
        else:
            timesteps = start.timesteps(scheduler, steps)
            latents = start.initial_latents(c, scheduler, timesteps, gens, shape)
        base_channels = None if start is None else start.base_channels()
        if base_channels is not None:
            base_channels = cond.expand(base_channels)
        step_kw = _step_kwargs(scheduler, gens, eta)

        it = enumerate(timesteps)
        if progress:
            from tailor.core.progress import track

            it = track(it, total=len(timesteps), description="sampling")
        for i, t in it:
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            state = StepState(
                model_in, t, cond, step=i, num_steps=len(timesteps), fraction=i / len(timesteps), scheduler=scheduler
            )
            kwargs = unet_kwargs(self.attachments, state)
            # kept for guide hooks; lists copied: diffusers' UNet pops the T2I residuals off the list it gets
            state.unet_kwargs = {k: list(v) if isinstance(v, list) else v for k, v in kwargs.items()}
            state.base_channels = base_channels
            pred = call_unet(c.unet, model_in, t, cond, kwargs, base_channels)
            if cfg:
                uncond, text = pred.chunk(2)
                pred = guide(self.attachments, state, uncond, text, guidance)
            latents = scheduler.step(pred, t, latents, **step_kw, return_dict=False)[0]
            if start is not None:
                latents = start.blend(latents, scheduler, timesteps, i)
        for a in self.attachments:
            a.method.set_scale(a.weight)

        array = decode(c, latents)
        if start is not None and mask is not None:
            array = start.overlay(array, config.keep_unmasked)
        settings = self.settings_record(config)
        return GenerationResult(to_pil(array), array, seeds, all_prompts, settings)


def take_rows(extra: dict[str, Any], rows: torch.Tensor, batch: int) -> dict[str, Any]:
    """A UNet call's extras for some rows of its ``batch``: every per-row tensor (ControlNet / T2I residuals, extra
    input channels, replaced prompt embeddings) cut to ``rows``; a fused reference pass is left out (its rows stand
    for the whole batch)."""

    def cut(v):
        if isinstance(v, torch.Tensor):
            return v[rows.to(v.device)] if v.ndim and v.shape[0] == batch else v
        if isinstance(v, list | tuple):
            return type(v)(cut(x) for x in v)
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        return v

    return {k: cut(v) for k, v in extra.items() if k != "reference_rows"}


def guide(attachments: list[Attachment], state: StepState, uncond: torch.Tensor, text: torch.Tensor, guidance: float):
    """Classifier-free guidance: the first active attachment's ``Method.guide`` result, else
    ``uncond + guidance (text - uncond)``."""
    for a in attachments:
        if type(a.method).guide is not Method.guide and a.active(state.step, state.num_steps):
            out = a.method.guide(state, uncond, text, guidance)
            if out is not None:
                return out
    return uncond + guidance * (text - uncond)


def _step_kwargs(scheduler, generators, eta: float) -> dict[str, Any]:
    params = set(inspect.signature(scheduler.step).parameters)
    kw: dict[str, Any] = {}
    if "eta" in params:
        kw["eta"] = eta
    if "generator" in params:
        kw["generator"] = generators
    return kw


def decode(components, latents: torch.Tensor) -> np.ndarray:
    """VAE-decode latents to float NHWC images in [0, 1] (diffusers' postprocessing)."""
    image = (vae_decode(components.vae, latents) / 2 + 0.5).clamp(0, 1)
    return image.float().cpu().permute(0, 2, 3, 1).numpy()
