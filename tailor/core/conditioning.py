"""What the hooks exchange: prompt conditioning and per-step extras.

The pipeline and the trainer build a :class:`Conditioning` from the prompts, hand it to every attached
method's ``encode`` hook (which may add tokens, edit embeddings or stash per-method tensors), and then,
at every denoising step, collect :class:`StepExtras` from the ``step_kwargs`` hooks. Extras of several
methods are merged: residuals are summed (several ControlNets / adapters at once), attention kwargs are
merged by key. Nothing here names a method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tailor.errors import ConfigError


@dataclass
class Conditioning:
    """Prompt conditioning for one UNet batch.

    With classifier-free guidance the batch is ``[uncond..., cond...]`` (diffusers' order) and
    ``cfg`` is True; ``batch_size`` is the number of images (half the UNet batch then).
    """

    encoder_hidden_states: torch.Tensor
    batch_size: int
    cfg: bool = False
    added_cond_kwargs: dict[str, torch.Tensor] | None = None  # SDXL: text_embeds, time_ids
    cross_attention_kwargs: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # per-method state, keyed by method name
    prompts: list[str] = field(default_factory=list)

    def split(self, tensor: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(uncond, cond) halves of a UNet-batch tensor; uncond is None without CFG."""
        if not self.cfg:
            return None, tensor
        uncond, cond = tensor.chunk(2)
        return uncond, cond

    def expand(self, tensor: torch.Tensor) -> torch.Tensor:
        """Repeat a per-image tensor over the UNet batch (both CFG halves)."""
        return torch.cat([tensor, tensor]) if self.cfg else tensor


@dataclass
class StepState:
    """What a ``step_kwargs`` hook sees at one UNet call (sampling step or training step)."""

    latents: torch.Tensor  # the UNet input of this call (already scaled / noised)
    timestep: torch.Tensor  # scalar (sampling) or (B,) (training)
    cond: Conditioning
    step: int = 0
    num_steps: int = 1
    fraction: float = 0.0  # step / num_steps: where in the schedule this call is
    training: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)  # the attachment's inputs or the training batch
    #: the sampling scheduler of this generation (``add_noise`` / ``scale_model_input`` for reference passes);
    #: None in training
    scheduler: Any = None
    #: what this sampling step's UNet call got (the methods' merged extras, an inpainting base's channels), for a
    #: ``Method.guide`` hook that runs some of its rows again (:func:`tailor.core.pipeline.take_rows`)
    unet_kwargs: dict[str, Any] | None = None
    base_channels: Any = None


@dataclass
class StepExtras:
    """Per-step additions a method contributes to the UNet call."""

    down_block_additional_residuals: list[torch.Tensor] | None = None  # ControlNet
    mid_block_additional_residual: torch.Tensor | None = None  # ControlNet
    down_intrablock_additional_residuals: list[torch.Tensor] | None = None  # T2I-Adapter
    cross_attention_kwargs: dict[str, Any] = field(default_factory=dict)
    #: replaces the prompt embeddings for this UNet call only (PhotoMaker's text-only steps before its merge step);
    #: the whole UNet batch, same shape as ``cond.encoder_hidden_states``; not scaled by the weight
    encoder_hidden_states: torch.Tensor | None = None
    #: with it, SDXL's ``added_cond_kwargs`` (pooled text embeds, time ids) for this UNet call only
    added_cond_kwargs: dict[str, torch.Tensor] | None = None
    #: extra UNet input channels appended to the latents of this call (:mod:`tailor.core.input_channels`): per image
    #: (``cond.batch_size`` rows, repeated over both CFG halves) or the whole UNet batch; not scaled by the weight
    input_channels: torch.Tensor | None = None
    #: rows the UNet runs in front of the batch in the same call, their prediction discarded (a fused reference
    #: pass: :class:`tailor.core.reference_bank.ReferenceRows`); not scaled by the weight
    reference_rows: Any = None

    def scaled(self, weight: float) -> StepExtras:
        """The residuals multiplied by ``weight`` (attention kwargs are the method's own business)."""
        if weight == 1.0:
            return self

        def mul(xs):
            return None if xs is None else [x * weight for x in xs]

        mid = self.mid_block_additional_residual
        return StepExtras(
            mul(self.down_block_additional_residuals),
            None if mid is None else mid * weight,
            mul(self.down_intrablock_additional_residuals),
            dict(self.cross_attention_kwargs),
            self.encoder_hidden_states,
            self.added_cond_kwargs,
            self.input_channels,
            self.reference_rows,
        )


def merge_extras(parts: list[StepExtras]) -> dict[str, Any]:
    """Merge several methods' extras into UNet keyword arguments (residuals summed elementwise)."""

    def add(a, b):
        if a is None:
            return None if b is None else list(b)
        if b is None:
            return a
        if len(a) != len(b):
            raise ValueError(f"cannot sum residual lists of lengths {len(a)} and {len(b)}")
        return [x + y for x, y in zip(a, b)]

    down = mid = intra = hidden = added = rows = None
    attn: dict[str, Any] = {}
    channels = [p.input_channels for p in parts if p.input_channels is not None]
    for p in parts:
        if p.reference_rows is not None:
            if rows is not None:
                raise ConfigError(
                    "two attached methods run reference rows inside the same UNet call; give one of them "
                    "reference_pass=cond (a separate pass)."
                )
            rows = p.reference_rows
        if p.encoder_hidden_states is not None:
            if hidden is not None:
                raise ConfigError(
                    "two attached methods replace the prompt embeddings of the same step (e.g. two PhotoMakers); "
                    "attach only one of them."
                )
            hidden, added = p.encoder_hidden_states, p.added_cond_kwargs
        down = add(down, p.down_block_additional_residuals)
        intra = add(intra, p.down_intrablock_additional_residuals)
        if p.mid_block_additional_residual is not None:
            mid = p.mid_block_additional_residual if mid is None else mid + p.mid_block_additional_residual
        attn.update(p.cross_attention_kwargs)
    kwargs: dict[str, Any] = {}
    if down is not None:
        kwargs["down_block_additional_residuals"] = tuple(down)
    if mid is not None:
        kwargs["mid_block_additional_residual"] = mid
    if intra is not None:
        # diffusers' UNet pops from this list: always hand it a fresh one
        kwargs["down_intrablock_additional_residuals"] = list(intra)
    if attn:
        kwargs["cross_attention_kwargs"] = attn
    if channels:  # in attachment order, after the base's own (an inpainting UNet's mask + masked image)
        kwargs["input_channels"] = torch.cat(channels, dim=1) if len(channels) > 1 else channels[0]
    if hidden is not None:
        kwargs["encoder_hidden_states"] = hidden
        if added is not None:
            kwargs["added_cond_kwargs"] = added
    if rows is not None:
        kwargs["reference_rows"] = rows
    return kwargs
