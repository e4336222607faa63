"""The AdaIN reader of a reference bank (sd-webui-controlnet's "reference_adain"): where the statistics are matched,
how, and the forward hook that records and matches them.

After each resnet / transformer pair of the down / up blocks and after the mid block,
``h = (h - mu) / sigma * sigma_ref + mu_ref`` (per channel, eps 1e-6 on the variance); a point joins when the bank's
weight is ``>= gn_weight`` (mid 0, down ``2 (1 - w / n)``, up ``2 w / n``).
"""

from __future__ import annotations

import torch
from torch import nn

from tailor.core.reference_bank.rows import in_reference_pass, match_rows, prefix_rows

EPS = 1e-6  # the community pipeline's floor on the variance


def adain_points(unet) -> list[tuple[nn.Module, float]]:
    """The modules whose output AdaIN matches and their ``gn_weight`` thresholds (the community pipeline's order):
    the mid block (0), each down block's transformers (or resnets when it has none) at ``2 (1 - w / n)``, each up
    block's at ``2 w / n``."""
    points: list[tuple[nn.Module, float]] = []
    if unet.mid_block is not None:
        points.append((unet.mid_block, 0.0))
    for blocks, down in ((unet.down_blocks, True), (unet.up_blocks, False)):
        n = len(blocks)
        for w, block in enumerate(blocks):
            gn = 2.0 * ((1.0 - w / n) if down else w / n)
            inner = getattr(block, "attentions", None) or block.resnets
            points += [(m, gn) for m in inner]
    return points


def channel_stats(h: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, var)`` of ``h``; with several references (``groups``, stacked reference-major) the
    average of their statistics."""
    var, mean = torch.var_mean(h, dim=(2, 3), keepdim=True, correction=0)
    if groups > 1:
        var = var.view(groups, -1, *var.shape[1:]).mean(0)
        mean = mean.view(groups, -1, *mean.shape[1:]).mean(0)
    return mean.detach(), var.detach()


def adain(h: torch.Tensor, mean_ref: torch.Tensor, var_ref: torch.Tensor) -> torch.Tensor:
    """``h`` with the reference's per-channel mean and standard deviation (the reference rows repeated to ``h``'s)."""
    rows = h.shape[0]
    mean_ref, var_ref = match_rows(mean_ref, rows, "reference statistics"), match_rows(var_ref, rows)
    var, mean = torch.var_mean(h, dim=(2, 3), keepdim=True, correction=0)
    std = var.clamp_min(EPS) ** 0.5
    std_ref = var_ref.clamp_min(EPS) ** 0.5
    return (h - mean) / std * std_ref + mean_ref


def adain_hook(bank, index: int):
    """The forward hook on AdaIN point ``index`` of ``bank``: records the reference's statistics while the bank
    writes, matches them (with the bank's ``style_fidelity`` rule) while it reads; a fused call does both."""

    def hook(module, args, output):
        is_tuple = isinstance(output, tuple)
        h = output[0] if is_tuple else getattr(output, "sample", output)
        n = prefix_rows()
        if bank.mode == "fused" and n:
            ref, main = h[:n], h[n:]
            if bank.scale >= bank.points[index][1]:
                bank.stats[index] = channel_stats(ref, bank.groups)
            if not bank.reading() or index not in bank.stats:
                return None
            h = torch.cat([ref, bank.mix(adain(main, *bank.stats[index]), main)])
        elif bank.mode == "write" and in_reference_pass():
            if bank.scale >= bank.points[index][1]:
                bank.stats[index] = channel_stats(h, bank.groups)
            bank.wrote(("adain", index))
            return None
        elif not bank.reading() or index not in bank.stats:
            return None
        else:
            h = bank.mix(adain(h, *bank.stats[index]), h)
        if is_tuple:
            return (h, *output[1:])
        if hasattr(output, "sample"):
            output.sample = h
            return output
        return h

    return hook
