"""A compact fine-tuning of a whole UNet: some weights in full, a low-rank (LoRA) delta on every other one.

Methods that fine-tune the whole UNet (IC-Light, an inpainting base) store ``merged - base``; on a small base that is
the size of the base. :class:`UNetDelta` trains and stores the same fine-tuning compactly:

* **full**: every tensor whose key starts with one of ``full_prefixes`` (``conv_in.``: the widened input layer) and
  every 1-D tensor (biases, norms: ~0.5% of the weights) trains in full and is stored as ``full.<unet key>`` =
  its delta over the base;
* **low rank**: every other Linear / Conv2d gets a core :class:`~tailor.core.lora.LoRA` of rank ``r`` (alpha = r, so
  the delta is ``B A``), stored in the canonical LoRA layout under ``lora.`` (``lora.unet.<path>.lora_A.weight``...).

:func:`dense_offsets` materialises the delta per UNet key (``full`` as stored, each adapted module's ``weight`` =
``(alpha / r) B A`` in float32), so ``merged = base + dense_offsets(state)`` — what a loader applies to sample with
plain modules and what an official full-offsets / full-UNet writer writes. While training, :meth:`UNetDelta.start`
injects the LoRA (from the base weights the UNet holds then) and :meth:`stop` takes it out again, restoring the base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from tailor.core.lora import LoRA, adaptable_modules, specs_from_state
from tailor.core.lora_math import delta_weight
from tailor.errors import FormatError

if TYPE_CHECKING:
    from tailor.core.components import Components

FULL, LOW = "full.", "lora."


def is_compact(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is a :class:`UNetDelta`'s (``full.*`` / ``lora.*`` keys)."""
    return bool(state) and all(k.startswith((FULL, LOW)) for k in state)


def dense_offsets(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``merged - base`` per UNet key (float32) of a compact state; keys it does not name are unchanged (zero)."""
    out = {k[len(FULL) :]: v.float() for k, v in state.items() if k.startswith(FULL)}
    lora = {k[len(LOW) :]: v for k, v in state.items() if k.startswith(LOW)}
    if lora:
        for mod, (r, alpha) in specs_from_state(lora).items():
            part, _, path = mod.partition(".")
            if part != "unet":
                raise FormatError(f"the compact UNet delta adapts {mod}, not a UNet module; the file is damaged.")
            b = lora.get(f"{mod}.lora_B.weight")
            if b is None:
                raise FormatError(f"the compact UNet delta lacks {mod}.lora_B.weight; the file is incomplete.")
            out[f"{path}.weight"] = (alpha / r) * delta_weight(lora[f"{mod}.lora_A.weight"].float(), b.float())
    return out


class UNetDelta:
    """Train a UNet as ``full`` tensors (``full_prefixes`` and every 1-D tensor) + a rank-``rank`` LoRA elsewhere."""

    def __init__(self, rank: int, full_prefixes: tuple[str, ...] = ("conv_in.",), name: str = "unet_delta"):
        if rank < 1:
            raise ValueError(f"rank must be >= 1; got {rank}")
        self.rank, self.full_prefixes, self.name = int(rank), tuple(full_prefixes), name
        self.lora: LoRA | None = None
        self._full: dict[str, nn.Parameter] = {}
        self._base: dict[str, torch.Tensor] = {}  # the full tensors' base values (CPU)
        self._state: dict[str, torch.Tensor] = {}  # the compact weights while not training

    def full(self, key: str, tensor: torch.Tensor) -> bool:
        return key.startswith(self.full_prefixes) or tensor.ndim <= 1

    @property
    def training(self) -> bool:
        return self.lora is not None

    def start(self, components: Components) -> None:
        """Inject the LoRA into ``components.unet`` (which must hold the base weights now), make the full tensors and
        the LoRA the only trainable weights, and load the compact weights held (a resumed or reloaded run)."""
        if self.lora is not None:
            return
        unet = components.unet
        self._full = {k: p for k, p in unet.named_parameters() if self.full(k, p)}
        self._base = {k: p.detach().to("cpu", copy=True) for k, p in self._full.items()}
        specs = {
            f"unet.{path}": (self.rank, float(self.rank))
            for path in adaptable_modules(unet)
            if not (path + ".").startswith(self.full_prefixes)
        }
        unet.requires_grad_(False)
        self.lora = LoRA(self.name, specs)
        self.lora.attach(components, trainable=True)
        for p in self._full.values():
            p.requires_grad_(True)
        if self._state:
            self.load_state_dict(self._state)

    def stop(self) -> None:
        """Keep the trained weights (compact), take the LoRA out and put the full tensors' base values back."""
        if self.lora is None:
            return
        self._state = self.state_dict()
        with torch.no_grad():
            for k, p in self._full.items():
                p.copy_(self._base[k].to(p))
        self.lora.detach()
        self.lora, self._full, self._base = None, {}, {}

    def parameters(self) -> list[nn.Parameter]:
        if self.lora is None:
            return []
        return list(self._full.values()) + self.lora.parameters()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``full.<key>`` (delta over the base) and ``lora.<canonical LoRA key>``."""
        if self.lora is None:
            return dict(self._state)
        out = {f"{FULL}{k}": p.detach().cpu() - self._base[k] for k, p in self._full.items()}
        out.update({f"{LOW}{k}": v.cpu() for k, v in self.lora.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Hold ``state``; while training, copy it into the full tensors (base + delta) and the LoRA."""
        self._state = dict(state)
        if self.lora is None:
            return
        missing = [f"{FULL}{k}" for k in self._full if f"{FULL}{k}" not in state]
        if missing:
            raise FormatError(f"the compact UNet delta lacks {missing[0]}; it was made with other options.")
        with torch.no_grad():
            for k, p in self._full.items():
                d = state[f"{FULL}{k}"]
                if tuple(d.shape) != tuple(p.shape):
                    raise FormatError(
                        f"the compact UNet delta has {FULL}{k} of shape {tuple(d.shape)}, this UNet {tuple(p.shape)}; "
                        f"use weights made for this base."
                    )
                p.copy_(self._base[k].to(p) + d.to(p))
        self.lora.load_state_dict({k[len(LOW) :]: v for k, v in state.items() if k.startswith(LOW)})
