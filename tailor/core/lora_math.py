"""Arithmetic on canonical LoRA state dicts (layout in :mod:`tailor.core.lora`): the ``B A`` update of a module
and :func:`merge`, which joins several LoRAs into one: ``"concat"`` stacks the ranks (exact: ``B A`` of the result
is the weighted sum of the inputs' ``(alpha/r) B A``), ``"svd"`` truncates that sum to a target rank (approximate).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch

from tailor.errors import ConfigError, IncompatibleError


def delta_weight(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``B A`` shaped like the base weight (Linear: (out, in); Conv2d: (out, in, k, k) with a 1x1 ``B``)."""
    if a.dim() == 2:
        return b @ a
    return torch.einsum("or,rikl->oikl", b.flatten(1), a)


def modules_of(state: dict[str, torch.Tensor]) -> list[str]:
    return [k[: -len(".lora_A.weight")] for k in state if k.endswith(".lora_A.weight")]


def merge(
    states: list[dict[str, torch.Tensor]],
    weights: list[float] | None = None,
    mode: str = "concat",
    rank: int | None = None,
) -> dict[str, torch.Tensor]:
    """One LoRA equal to ``sum_i weight_i * LoRA_i`` (canonical state dicts).

    ``concat``: per module, ``A = [A_1; A_2; ...]``, ``B = [w_1 (a_1/r_1) B_1, w_2 (a_2/r_2) B_2, ...]`` and
    alpha = the summed rank, so the result is exact (up to float summation order). ``svd``: the summed update
    truncated to ``rank`` (the best rank-``rank`` approximation; alpha = rank).
    """
    if not states:
        raise ConfigError("merge needs at least one LoRA.")
    weights = [1.0] * len(states) if weights is None else list(weights)
    if len(weights) != len(states):
        raise ConfigError(f"merge got {len(states)} LoRAs but {len(weights)} weights; give one weight per LoRA.")
    if mode not in ("concat", "svd"):
        raise ConfigError(f"merge mode {mode!r} is not concat or svd.")
    if mode == "svd" and (rank is None or rank < 1):
        raise ConfigError("merge mode svd needs a target rank >= 1.")
    out: dict[str, torch.Tensor] = {}
    mods = list(dict.fromkeys(m for s in states for m in modules_of(s)))
    for mod in mods:
        parts = []  # (A, B scaled by weight * alpha / r)
        for s, w in zip(states, weights):
            if f"{mod}.lora_A.weight" not in s:
                continue
            a, b = s[f"{mod}.lora_A.weight"].float(), s[f"{mod}.lora_B.weight"].float()
            alpha = float(s.get(f"{mod}.alpha", torch.tensor(float(a.shape[0]))))
            parts.append((a, b * (w * alpha / a.shape[0])))
        shapes = {(tuple(b.shape[:1]) + tuple(a.shape[1:])) for a, b in parts}
        if len(shapes) > 1:
            raise IncompatibleError(
                f"the LoRAs disagree on the shape of {mod} ({sorted(shapes)}); they were made "
                f"for different base models and cannot be merged."
            )
        if mode == "concat":
            a = torch.cat([p[0] for p in parts])
            b = torch.cat([p[1] for p in parts], dim=1)
        else:
            a, b = _svd(sum(delta_weight(pa, pb) for pa, pb in parts), rank)
        out[f"{mod}.lora_A.weight"], out[f"{mod}.lora_B.weight"] = a.contiguous(), b.contiguous()
        out[f"{mod}.alpha"] = torch.tensor(float(a.shape[0]))
    return out


def _svd(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = delta.shape
    u, s, vh = torch.linalg.svd(delta.flatten(1), full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    b, a = u[:, :r] * root, root[:, None] * vh[:r]
    if len(shape) == 4:
        return a.reshape(r, *shape[1:]), b.reshape(shape[0], r, 1, 1)
    return a, b


def most_common(values: Iterable) -> float:
    return Counter(values).most_common(1)[0][0]
