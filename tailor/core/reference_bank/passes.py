"""Running a reference: a separate reference pass, or reference rows fused into the sampling call, and the noising.

:func:`run_reference_pass` runs a reference latent through a UNet (the base or a second, frozen one) with the banks
writing; :func:`fused_call` (a method returns :class:`ReferenceRows` in ``StepExtras.reference_rows``) runs the
reference rows in front of the sampling batch in the sampling call itself, so a step costs one UNet call of ``R + B``
rows; :func:`noised` brings a clean reference latent to the step's timestep.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tailor.core.reference_bank.rows import fused_rows, writing

if TYPE_CHECKING:
    from tailor.core.reference_bank.bank import ReferenceBank


@contextlib.contextmanager
def reference_pass(banks: list[ReferenceBank], groups: int = 1, rows: torch.Tensor | None = None) -> Iterator[None]:
    """Run a UNet inside: ``banks`` record (``groups`` references per row, stacked reference-major), then read at
    the next ordinary call; ``rows``: the sampling batch's row each pass row stands for (:func:`pass_rows`). The
    first pass runs the whole UNet and learns the order of the writes; later ones stop after the last write a bank
    reads at its current scale."""
    for b in banks:
        b.begin_write(groups)
    try:
        with writing(tuple(banks), rows):
            yield
    finally:
        for b in banks:
            b.end_write()


def run_reference_pass(
    banks: list[ReferenceBank],
    unet,
    latents: torch.Tensor,
    timestep,
    encoder_hidden_states: torch.Tensor,
    added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    cross_attention_kwargs: dict[str, Any] | None = None,
    groups: int = 1,
    rows: torch.Tensor | None = None,
) -> None:
    """One reference pass of ``latents`` (already noised and scaled) through ``unet``; its prediction is discarded.
    ``rows``: the sampling batch's row each pass row stands for (other methods' per-row inputs follow them)."""
    from tailor.core.input_channels import unet_in_channels, zero_channels

    extra = unet_in_channels(unet) - latents.shape[1]
    if extra > 0:  # a widened UNet (inpainting base, IC-Light): the reference pass conditions on nothing else
        latents = torch.cat([latents, zero_channels(latents, extra)], dim=1)
    with reference_pass(banks, groups, rows), torch.no_grad():
        unet(
            latents,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            added_cond_kwargs=added_cond_kwargs,
            cross_attention_kwargs=cross_attention_kwargs,
            return_dict=False,
        )


@dataclass
class ReferenceRows:
    """Reference rows to run in front of the sampling batch in the same UNet call (a *fused* reference pass: one
    call of ``R + B`` rows instead of a pass of ``R`` rows and a call of ``B``). ``rows``: the sampling row each
    reference row stands for (other methods' per-row inputs follow it); the rows are stacked reference-major."""

    latents: torch.Tensor
    encoder_hidden_states: torch.Tensor
    added_cond_kwargs: dict[str, torch.Tensor] | None
    rows: torch.Tensor
    banks: list[ReferenceBank]
    groups: int = 1
    #: the rows' own prediction, set by the call (Infinite-ID steps its ID stream with it)
    prediction: torch.Tensor | None = None


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([x.new_zeros((n, *x.shape[1:])), x])


def fused_call(unet, ref: ReferenceRows, latents, timestep, hidden, added, extra: dict[str, Any]) -> torch.Tensor:
    """The UNet on ``[reference rows; sampling rows]``: banks write from the first rows and the others read them in
    the same layer; residuals of other methods get zero rows in front; returns the sampling rows' prediction."""
    n, b = ref.latents.shape[0], latents.shape[0]
    ref_latents = ref.latents.to(latents)
    if ref_latents.shape[1] < latents.shape[1]:  # a widened UNet input (inpainting base, IC-Light): zero channels
        pad = latents.shape[1] - ref_latents.shape[1]
        ref_latents = torch.cat([ref_latents, ref_latents.new_zeros((n, pad, *ref_latents.shape[2:]))], dim=1)
    latents = torch.cat([ref_latents, latents])
    hidden = torch.cat([ref.encoder_hidden_states.to(hidden), hidden])
    if added:
        added = {k: torch.cat([ref.added_cond_kwargs[k].to(v), v]) for k, v in added.items()}
    extra = dict(extra)
    if extra.get("down_block_additional_residuals") is not None:
        extra["down_block_additional_residuals"] = tuple(_pad(r, n) for r in extra["down_block_additional_residuals"])
    if extra.get("mid_block_additional_residual") is not None:
        extra["mid_block_additional_residual"] = _pad(extra["mid_block_additional_residual"], n)
    if extra.get("down_intrablock_additional_residuals") is not None:
        extra["down_intrablock_additional_residuals"] = [
            _pad(r, n) for r in extra["down_intrablock_additional_residuals"]
        ]
    for bank in ref.banks:
        bank.begin_fused(ref.groups)
    rows = torch.cat([ref.rows.to(latents.device), torch.arange(b, device=latents.device)])
    try:
        with fused_rows(n, rows):
            out = unet(latents, timestep, encoder_hidden_states=hidden, added_cond_kwargs=added, return_dict=False,
                       **extra)[0]  # fmt: skip
    finally:
        for bank in ref.banks:
            bank.mode = "read"
    ref.prediction = out[:n]
    return out[n:]


def noised(scheduler, latents: torch.Tensor, noise: torch.Tensor, timestep) -> torch.Tensor:
    """``latents`` noised to ``timestep`` and scaled for the UNet by the sampling scheduler (what the community
    pipeline does: ``scale_model_input(add_noise(x0, eps, t), t)``)."""
    t = torch.as_tensor(timestep, device=latents.device).reshape(1)
    x = scheduler.add_noise(latents, noise, t)
    return scheduler.scale_model_input(x, timestep)
