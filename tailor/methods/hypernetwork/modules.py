"""Hypernetwork modules (NovelAI 2022, A1111 semantics) and the attention-processor wrapper that applies them.

:class:`HypernetworkModule` is A1111's ``HypernetworkModule`` layer for layer, so its ``linear.<i>`` state-dict keys
match A1111 files exactly (activations, LayerNorm and Dropout sit between the Linears in one ``Sequential``, so the
indices of the Linears skip numbers). Its forward returns ``mlp(x)``; the wrapper adds ``x + mlp(x) * strength``.

:class:`HypernetworkProcessor` wraps any diffusers attention processor: for the duration of one call it puts a
:class:`ContextHook` in front of ``attn.to_k`` / ``attn.to_v``, which feeds them ``x + mlp_k(x) * s`` /
``x + mlp_v(x) * s`` where ``x`` is whatever context the base processor gives them (the text for cross-attention,
the hidden states for self-attention) and the MLP pair is picked by the width of ``x``, as A1111 does. Queries are
untouched. Wrappers nest, so several hypernetworks apply in attachment order.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from tailor.methods.hypernetwork.config import activations


class HypernetworkModule(nn.Module):
    """One MLP of width ``dim`` (A1111's layout: ``linear`` = Linear [, act] [, LayerNorm] [, Dropout], ...)."""

    def __init__(self, dim: int, layer_structure, activation_func: str, weight_init: str, layer_norm: bool,
                 activate_output: bool, dropout_structure):  # fmt: skip
        super().__init__()
        ls, layers = layer_structure, []
        act = activations()[activation_func or "linear"]
        for i in range(len(ls) - 1):
            layers.append(nn.Linear(int(dim * ls[i]), int(dim * ls[i + 1])))
            if act is not None and (i < len(ls) - 2 or activate_output):
                layers.append(act())
            if layer_norm:
                layers.append(nn.LayerNorm(int(dim * ls[i + 1])))
            if dropout_structure[i + 1] > 0:
                layers.append(nn.Dropout(p=float(dropout_structure[i + 1])))
        self.linear = nn.Sequential(*layers)
        self._init(weight_init, activation_func)

    @torch.no_grad()
    def _init(self, weight_init: str, activation_func: str) -> None:
        """A1111's initialisation (LayerNorms too get N(0, 0.01) weights under every scheme, as there)."""
        relu = "leaky_relu" if activation_func == "leakyrelu" else "relu"
        for layer in self.linear:
            if not isinstance(layer, nn.Linear | nn.LayerNorm):
                continue
            w, b = layer.weight, layer.bias
            if weight_init == "Normal" or isinstance(layer, nn.LayerNorm):
                nn.init.normal_(w, mean=0.0, std=0.01)
                nn.init.zeros_(b)
                continue
            {
                "XavierUniform": nn.init.xavier_uniform_,
                "XavierNormal": nn.init.xavier_normal_,
                "KaimingUniform": functools.partial(nn.init.kaiming_uniform_, nonlinearity=relu),
                "KaimingNormal": functools.partial(nn.init.kaiming_normal_, nonlinearity=relu),
            }[weight_init](w)
            nn.init.zeros_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def fix_old_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A1111's ``fix_old_state_dict``: the first hypernetworks named their layers ``linear1`` / ``linear2``."""
    renames = {"linear1.": "linear.0.", "linear2.": "linear.1."}
    out = {}
    for k, v in state.items():
        for old, new in renames.items():
            if k.startswith(old):
                k = new + k[len(old) :]
        out[k] = v
    return out


class ContextHook(nn.Module):
    """Stands in for ``attn.to_k`` / ``attn.to_v`` during one call: ``proj(x + mlp(x) * s)``, or ``proj(x)``."""

    def __init__(self, proj: nn.Module, pick, which: str, strength: float):
        super().__init__()
        # plain attributes: the projection stays the attention's child, the MLPs stay the method's
        self.__dict__.update(proj=proj, pick=pick, which=which, strength=strength)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        mlp = self.pick(int(x.shape[-1]), self.which)
        if mlp is not None:
            x = x + mlp(x.float()).to(x.dtype) * self.strength  # A1111 runs the MLPs in float32
        return self.proj(x, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["proj"], name)  # processors may read to_k.weight etc.


class HypernetworkProcessor:
    """Wraps one attention processor (plain object: the MLPs do not join the UNet's parameters or state dict)."""

    def __init__(self, base, owner):
        self.base, self.owner = base, owner  # owner: the method (strength, MLP lookup)

    def run(self, attn, hidden_states, *args, **kwargs):
        s = self.owner.effective_strength()
        if s == 0:
            return self.base(attn, hidden_states, *args, **kwargs)
        to_k, to_v = attn.to_k, attn.to_v
        attn.to_k = ContextHook(to_k, self.owner.mlp, "k", s)
        attn.to_v = ContextHook(to_v, self.owner.mlp, "v", s)
        try:
            return self.base(attn, hidden_states, *args, **kwargs)
        finally:
            attn.to_k, attn.to_v = to_k, to_v


@functools.cache
def processor_class(base_cls: type) -> type:
    """A :class:`HypernetworkProcessor` subclass whose ``__call__`` shows ``base_cls``'s signature.

    diffusers' ``Attention.forward`` drops cross-attention kwargs that the processor's signature does not name, so
    the wrapper must advertise the wrapped processor's parameters (IP-Adapter scales, masks, ...).
    """

    def __call__(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    functools.update_wrapper(__call__, base_cls.__call__)
    return type(f"Hypernetwork{base_cls.__name__}", (HypernetworkProcessor,), {"__call__": __call__})


def wrap(base, owner) -> HypernetworkProcessor:
    return processor_class(type(base))(base, owner)


def unwrap(processor, owner):
    """``processor`` without ``owner``'s wrapper, wherever it sits in a chain of wrappers."""
    if isinstance(processor, HypernetworkProcessor):
        if processor.owner is owner:
            return processor.base
        processor.base = unwrap(processor.base, owner)
    return processor
