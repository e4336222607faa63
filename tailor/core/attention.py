"""Decoupled cross-attention (Ye et al. 2023, *IP-Adapter*), the building block of image- and ID-prompt adapters.

In every cross-attention layer of the UNet the text attention gets one extra attention per attached adapter over its
own tokens, with its own key/value projections and scale::

    out = Attn(Q, K_text, V_text) + sum_a scale_a(layer) * Attn(Q, to_k_ip_a(c_a), to_v_ip_a(c_a))

:class:`ImageBranch` holds one adapter's ``to_k_ip`` / ``to_v_ip`` (bias-free, initialised from the layer's
``to_k`` / ``to_v``, one pair per cross-attention layer in ``unet.attn_processors`` order), its current tokens (the
UNet batch's, ``[uncond, cond]`` under guidance) and its scales (a global one times a per-layer factor: a float, a
per-layer list, or an InstantStyle dict like ``{"down": ..., "mid": ..., "up": {"block_0": [0, 1]}}``).
:func:`attach_branch` puts a :class:`DecoupledAttnProcessor` on the cross-attention layers (self-attention keeps its
processor); several branches share it (several adapters at once); :func:`detach_branch` removes one and restores the
original processor once none is left. Numerics are those of diffusers' ``IPAdapterAttnProcessor2_0`` (tested equal).
IP-Adapter, InstantID and PuLID use it (:mod:`tailor.core.image_prompt`); the file layout of the branch weights is
the ``ip_adapter`` method's (``formats.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tailor.core.reference_bank import pass_rows, prefix_rows
from tailor.errors import ConfigError


def cross_attention_layers(unet) -> list[str]:
    """Names (``...attn2.processor``) of the UNet's cross-attention processors, in ``attn_processors`` order."""
    out = []
    for name in unet.attn_processors:
        attn = unet.get_submodule(name.removesuffix(".processor"))
        if not getattr(attn, "is_cross_attention", False) or "motion_modules" in name:
            continue
        out.append(name)
    return out


class ImageBranch(nn.Module):
    """One adapter's decoupled key/value projections over every cross-attention layer, plus its tokens and scales."""

    def __init__(self, unet, token_dim: int | None = None, init_from_base: bool = True):
        super().__init__()
        self.layer_names = cross_attention_layers(unet)
        if not self.layer_names:
            raise ConfigError("this UNet has no cross-attention layers; decoupled cross-attention cannot attach.")
        self.to_k_ip = nn.ModuleList()
        self.to_v_ip = nn.ModuleList()
        for name in self.layer_names:
            attn = unet.get_submodule(name.removesuffix(".processor"))
            width = token_dim or attn.to_k.in_features
            k = nn.Linear(width, attn.to_k.out_features, bias=False)
            v = nn.Linear(width, attn.to_v.out_features, bias=False)
            if init_from_base and width == attn.to_k.in_features:
                with torch.no_grad():  # the paper: start from the text projections
                    k.weight.copy_(attn.to_k.weight)
                    v.weight.copy_(attn.to_v.weight)
            self.to_k_ip.append(k.to(attn.to_k.weight.device))
            self.to_v_ip.append(v.to(attn.to_v.weight.device))
        self.tokens: torch.Tensor | None = None  # (UNet batch, T, token_dim), set by the adapter's encode
        #: region-level use (Character-Adapter): instead of ``tokens``, one attention per region over its own tokens,
        #: each output multiplied by ``gate(processor name, hidden_states)`` -> (batch, seq, 1) (None: ungated)
        self.regions: list[tuple[torch.Tensor, Any]] | None = None
        self.scale = 1.0
        self.layer_scales = [1.0] * len(self.layer_names)

    @property
    def token_dim(self) -> int:
        return int(self.to_k_ip[0].in_features)

    def layer_scale(self, index: int) -> float:
        return float(self.scale) * float(self.layer_scales[index])

    def set_layer_scales(self, unet, spec: float | list[float] | dict[str, Any] | None) -> None:
        """Per-layer factors: None/float (every layer), a list (one per cross-attention layer) or an InstantStyle
        dict (diffusers' ``set_ip_adapter_scale`` semantics: blocks not named get 0)."""
        n = len(self.layer_names)
        if spec is None:
            self.layer_scales = [1.0] * n
        elif isinstance(spec, int | float):
            self.layer_scales = [float(spec)] * n
        elif isinstance(spec, list | tuple):
            if len(spec) != n:
                raise ConfigError(
                    f"a per-layer scale list needs {n} values (one per cross-attention layer of this "
                    f"UNet); got {len(spec)}."
                )
            self.layer_scales = [float(s) for s in spec]
        elif isinstance(spec, dict):
            from diffusers.loaders.unet_loader_utils import _maybe_expand_lora_scales

            try:
                expanded = _maybe_expand_lora_scales(unet, [spec], default_scale=0.0)[0]
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(
                    f"bad per-block scale {spec!r} ({e}); use e.g. "
                    f'{{"down": 0, "mid": 0, "up": {{"block_0": [0, 1]}}}}.'
                ) from e
            scales = []
            for name in self.layer_names:
                value = 0.0
                for prefix, s in expanded.items():
                    if name.startswith(prefix):
                        value = float(s)
                scales.append(value)
            self.layer_scales = scales
        else:
            raise ConfigError(f"per-block scale must be a number, a list or a dict; got {type(spec).__name__}.")


class DecoupledAttnProcessor:
    """Text cross-attention plus one decoupled attention per registered :class:`ImageBranch`.

    A plain object (not an ``nn.Module``), so the branches' weights never become part of the UNet's state dict.
    """

    def __init__(self, base, name: str):
        self.base = base  # the processor to restore when the last branch leaves
        self.name = name
        self.branches: list[tuple[ImageBranch, int]] = []

    def add(self, branch: ImageBranch, index: int) -> None:
        if not any(b is branch for b, _ in self.branches):
            self.branches.append((branch, index))

    def remove(self, branch: ImageBranch) -> None:
        self.branches = [(b, i) for b, i in self.branches if b is not branch]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        # the same operations, in the same order, as diffusers' IPAdapterAttnProcessor2_0 (numerics tested equal)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        for branch, index in self.branches:
            scale = branch.layer_scale(index)
            if scale == 0:
                continue
            groups = branch.regions if branch.regions is not None else [(branch.tokens, None)]
            for tokens, gate in groups:
                if tokens is None:
                    continue
                tokens = pass_rows(tokens)  # a reference pass runs some of the sampling batch's rows
                if tokens.shape[0] != batch_size:
                    raise RuntimeError(
                        f"image tokens for a batch of {tokens.shape[0]} reached a UNet batch of "
                        f"{batch_size}; the adapter's encode hook did not run for this batch."
                    )
                tokens = tokens.to(device=query.device, dtype=branch.to_k_ip[index].weight.dtype)
                ip_key = branch.to_k_ip[index](tokens).to(query.dtype)
                ip_value = branch.to_v_ip[index](tokens).to(query.dtype)
                ip_key = ip_key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
                ip_value = ip_value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
                ip = F.scaled_dot_product_attention(
                    query, ip_key, ip_value, attn_mask=None, dropout_p=0.0, is_causal=False
                )
                ip = ip.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
                mask = gate(self.name, hidden_states) if gate is not None else None
                if mask is not None and mask.shape[0] != batch_size:  # a gate over the sampling batch's rows:
                    if prefix_rows():  # reference rows fused in front of them are ungated
                        mask = torch.cat([mask.new_ones((prefix_rows(), *mask.shape[1:])), mask])
                    else:  # a call over some of the rows (StoryGen's extra unconditional call): theirs
                        mask = pass_rows(mask)
                if mask is not None:
                    ip = ip * mask.to(ip)
                hidden_states = hidden_states + scale * ip

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attach_branch(unet, branch: ImageBranch) -> None:
    """Register ``branch`` on every cross-attention layer (installing decoupled processors where needed)."""
    procs = dict(unet.attn_processors)
    missing = [n for n in branch.layer_names if n not in procs]
    if missing:
        raise ConfigError(f"the adapter was built for another UNet (no layer {missing[0]}); build it for this base.")
    for index, name in enumerate(branch.layer_names):
        proc = procs[name]
        if not isinstance(proc, DecoupledAttnProcessor):
            proc = DecoupledAttnProcessor(proc, name)
        proc.add(branch, index)
        procs[name] = proc
    unet.set_attn_processor(procs)


def detach_branch(unet, branch: ImageBranch) -> None:
    """Remove ``branch``; a layer whose last branch leaves gets its original processor back."""
    procs = dict(unet.attn_processors)
    for name, proc in procs.items():
        if isinstance(proc, DecoupledAttnProcessor):
            proc.remove(branch)
            if not proc.branches:
                procs[name] = proc.base
    unet.set_attn_processor(procs)
    branch.tokens = None
    branch.regions = None


def is_attached(unet, branch: ImageBranch) -> bool:
    return any(
        isinstance(p, DecoupledAttnProcessor) and any(b is branch for b, _ in p.branches)
        for p in unet.attn_processors.values()
    )
