"""Options of hypernetworks (NovelAI 2022, as implemented and file-formatted by AUTOMATIC1111's webui): per
attention-context width a pair of small MLPs that rewrite the context fed to ``to_k`` and ``to_v``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache
from typing import ClassVar

from torch import nn

from tailor.core.config import Config, option

WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")


@cache
def activations() -> dict[str, type[nn.Module] | None]:
    """A1111's table: its named ones (note: ``swish`` is ``Hardswish`` there) plus every ``torch.nn`` activation by
    lower-case class name (``gelu``, ``silu``, ``mish``, ...); ``linear`` means none."""
    table: dict[str, type[nn.Module] | None] = {
        name.lower(): cls
        for name, cls in inspect.getmembers(nn.modules.activation, inspect.isclass)
        if cls.__module__ == "torch.nn.modules.activation"
    }
    table.update(linear=None, relu=nn.ReLU, leakyrelu=nn.LeakyReLU, elu=nn.ELU, swish=nn.Hardswish, tanh=nn.Tanh,
                 sigmoid=nn.Sigmoid)  # fmt: skip
    return table


def default_dropout(layer_structure: list[float], use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """A1111's ``parse_dropout_structure``: 0.3 after every hidden layer, optionally after the last hidden one."""
    n = len(layer_structure)
    if not use_dropout:
        return [0.0] * n
    return [0.0] + [0.3] * (n - 3) + [0.3 if last_layer_dropout else 0.0, 0.0]


@dataclass
class HypernetworkConfig(Config):
    """The MLP shape shared by every width, its initialisation, and the strength it is applied with."""

    paper: ClassVar[str] = "NovelAI 2022 hypernetworks (AUTOMATIC1111 stable-diffusion-webui implementation)"

    layer_structure: list[float] = option([1.0, 2.0, 1.0], "layer widths as multiples of d (1, 2, 1 = d -> 2d -> d)")
    activation_func: str = option(
        "linear",
        "activation after each hidden layer: linear (none), relu, leakyrelu, "
        "elu, swish, tanh, sigmoid, gelu, silu, mish, ... (A1111's names)",
    )
    weight_initialization: str = option(
        "Normal", "weight init (Normal = N(0, 0.01), zero biases)", choices=WEIGHT_INITS
    )
    is_layer_norm: bool = option(False, "LayerNorm after each layer")
    use_dropout: bool = option(False, "dropout 0.3 after hidden layers (A1111's default structure)")
    dropout_structure: list[float] = option(
        [], "per-layer dropout probabilities, e.g. 0,0.3,0 (default: from use_dropout / last_layer_dropout)"
    )
    last_layer_dropout: bool = option(False, "with use_dropout: also drop out after the last hidden layer")
    activate_output: bool = option(False, "apply the activation after the output layer too")
    strength: float = option(1.0, "multiplier of the MLP outputs at sampling time (x + mlp(x) * strength)")
    widths: list[int] = option(
        [],
        "context widths that get an MLP pair (default: every attention context width of "
        "the base: cross-attention and self-attention)",
    )

    def validate(self) -> None:
        c, ls = self.check, self.layer_structure
        c(
            len(ls) >= 2 and ls[0] == 1 and ls[-1] == 1 and all(x > 0 for x in ls),
            f"layer_structure must start and end with 1 and be positive (e.g. 1,2,1); got {ls}.",
        )
        c(
            self.activation_func in activations(),
            f"activation_func {self.activation_func!r} is unknown; use linear, relu, leakyrelu, elu, swish, tanh, "
            f"sigmoid, gelu, silu or another torch.nn activation name.",
        )
        ds = self.dropout_structure
        c(
            not ds or (len(ds) == len(ls) and ds[0] == 0 and ds[-1] == 0 and all(0 <= p < 1 for p in ds)),
            f"dropout_structure needs one value per layer ({len(ls)}), each in [0, 1), first and last 0; got {ds}.",
        )
        c(all(w > 0 for w in self.widths), f"widths must be positive; got {self.widths}.")

    def resolved_dropout(self) -> list[float]:
        if self.dropout_structure:
            return [float(p) for p in self.dropout_structure]
        return default_dropout(self.layer_structure, self.use_dropout, self.last_layer_dropout)
