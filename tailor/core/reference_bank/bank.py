"""A reference bank: one reader's store of what a reference pass wrote into one UNet, and how the next call reads it.

The bank owns the write / read cycle (``idle`` -> ``write`` (or ``fused``) -> ``done`` / ``read``): it learns the
order of the writes on its first pass, so later passes stop after the last write it reads at its scale; it serves each
layer's features as the reading call's rows (:meth:`ReferenceBank.feature`), and with ``adain`` hooks the points of
:func:`~tailor.core.reference_bank.adain.adain_points`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tailor.core.reference_bank.adain import adain_hook, adain_points
from tailor.core.reference_bank.processor import ReferenceAttnProcessor, processor_class
from tailor.core.reference_bank.rows import current_rows, in_reference_pass, match_rows, maybe_stop
from tailor.errors import ConfigError


def self_attention_layers(unet) -> list[tuple[str, int]]:
    """``(attn1 processor name, norm1 width)`` of every transformer block with a self-attention, in UNet order."""
    from diffusers.models.attention import BasicTransformerBlock

    out = []
    for name, module in unet.named_modules():
        if isinstance(module, BasicTransformerBlock) and "motion_modules" not in name:
            if getattr(module, "only_cross_attention", False):
                continue
            out.append((f"{name}.attn1.processor", int(module.norm1.normalized_shape[0])))
    return out


class ReferenceBank:
    """One reader's bank over one UNet: what the reference pass wrote and how the next call reads it.

    ``reader``: ``"attn"`` (concatenate into attn1's keys / values), ``"attn3"`` (the method's added
    cross-attention modules, ``attn3[layer name]``) or None (AdaIN only). ``adain``: match GroupNorm statistics.
    ``scale``: the method's weight (0 switches the bank off; it also gates layers as the community pipeline's
    ``attention_auto_machine_weight`` / ``gn_auto_machine_weight`` do). ``uncond_rows``: the reading call's first
    rows that are unconditional (0 without guidance), which ``style_fidelity`` mixes with plain attention.
    """

    def __init__(
        self,
        unet,
        reader: str | None = "attn",
        adain: bool = False,
        style_fidelity: float = 0.5,
        attn3: dict[str, nn.Module] | None = None,
        read_fn: Any = None,
    ):
        if reader not in ("attn", "attn3", "call", None):
            raise ConfigError(f"reference bank reader must be 'attn', 'attn3', 'call' or None; got {reader!r}.")
        if reader == "attn3" and not attn3:
            raise ConfigError("an attn3 reference bank needs one attn3 module per self-attention layer.")
        if reader == "call" and not callable(read_fn):
            raise ConfigError("a 'call' reference bank needs read_fn(attn, hidden_states, bank, extra).")
        layers = self_attention_layers(unet)
        if reader is not None and not layers:
            raise ConfigError("this UNet has no transformer blocks with self-attention; a reference bank cannot read.")
        self.unet = unet
        self.reader, self.adain, self.style_fidelity, self.attn3 = reader, adain, float(style_fidelity), attn3
        self.read_fn = read_fn
        self.layers = [name for name, _ in layers]
        order = sorted(range(len(layers)), key=lambda i: -layers[i][1])  # widest first, stable (the community's)
        self.layer_gate = {layers[i][0]: rank / len(layers) for rank, i in enumerate(order)}
        self.points = adain_points(unet) if adain else []
        self.mode = "idle"
        self.scale = 1.0
        self.uncond_rows = 0
        self.features: dict[str, torch.Tensor] = {}
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.groups = 1  # references per row: the pass's rows are [ref_0 rows..., ref_1 rows...]
        self._hooks: list[Any] = []
        # the order the pass writes in (learnt on the first full pass): later passes stop after the last needed write
        self.order: list[tuple[str, Any]] | None = None
        self._seen: list[tuple[str, Any]] = []
        self._last: tuple[str, Any] | None = None

    # ------------------------------------------------------------------ attach / detach
    def attach(self) -> None:
        procs = dict(self.unet.attn_processors)
        missing = [n for n in self.layers if n not in procs]
        if missing:
            raise ConfigError(f"the reference bank was built for another UNet (no layer {missing[0]}).")
        for name in self.layers:
            proc = procs[name]
            if not isinstance(proc, ReferenceAttnProcessor):
                proc = processor_class(type(proc))(proc, name)
            proc.add(self)
            procs[name] = proc
        self.unet.set_attn_processor(procs)
        for index, (module, _) in enumerate(self.points):
            self._hooks.append(module.register_forward_hook(adain_hook(self, index)))

    def detach(self) -> None:
        procs = dict(self.unet.attn_processors)
        for name, proc in procs.items():
            if isinstance(proc, ReferenceAttnProcessor):
                proc.remove(self)
                if not proc.banks:
                    procs[name] = proc.base
        self.unet.set_attn_processor(procs)
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.clear()

    def clear(self) -> None:
        self.features.clear()
        self.stats.clear()
        self.mode = "idle"

    def needs(self, event: tuple[str, Any]) -> bool:
        """Whether the next read uses this write (at the current scale)."""
        kind, key = event
        if kind == "attn":
            return self.reader is not None and self.scale > self.layer_gate[key]
        return self.adain and self.scale >= self.points[key][1]

    def begin_write(self, groups: int) -> None:
        self.features.clear()
        self.stats.clear()
        self.groups = groups
        self.mode = "write"
        self._seen = []
        needed = [e for e in self.order or () if self.needs(e)]
        self._last = needed[-1] if needed else None

    def begin_fused(self, groups: int) -> None:
        """Write and read in one call: the call's first rows are the reference rows (:func:`fused_call`)."""
        self.begin_write(groups)
        self._last = None
        self.mode = "fused"

    def end_write(self) -> None:
        if self.order is None:
            self.order = list(self._seen)
        self.mode = "read"

    def wrote(self, event: tuple[str, Any]) -> None:
        """Note a write of the pass (``("attn", layer)`` or ``("adain", point)``); the last one needed ends it."""
        self._seen.append(event)
        if event == self._last:
            self.mode = "done"
            maybe_stop()

    # ------------------------------------------------------------------ writing
    def write(self, name: str, hidden_states: torch.Tensor) -> None:
        self.features[name] = hidden_states.detach()
        self.wrote(("attn", name))

    def reading(self) -> bool:
        return self.mode in ("read", "fused") and self.scale > 0 and not in_reference_pass()

    def feature(self, name: str, rows: int) -> torch.Tensor | None:
        """The layer's bank as ``rows`` rows, references concatenated along the tokens; None when it does not read
        this layer (not written, or gated off by the weight)."""
        f = self.features.get(name)
        if f is None or not self.scale > self.layer_gate[name]:
            return None
        g = self.groups
        if g > 1:  # (g * r, N, D) -> (r, g * N, D)
            f = f.view(g, f.shape[0] // g, *f.shape[1:]).transpose(0, 1).reshape(f.shape[0] // g, -1, f.shape[-1])
        sel = current_rows()
        if sel is not None and f.shape[0] != rows and sel.numel() == rows and f.shape[0] > int(sel.max()):
            f = f[sel.to(f.device)]  # a call on some rows of the sampling batch (batch_rows): the bank's rows follow
        return match_rows(f, rows)

    def mix(self, with_ref: torch.Tensor, plain: torch.Tensor | None) -> torch.Tensor:
        """``style_fidelity``: the unconditional rows become ``sf * plain + (1 - sf) * with_ref``."""
        u, sf = self.uncond_rows, self.style_fidelity
        if not u or sf <= 0 or plain is None:
            return with_ref
        return torch.cat([sf * plain[:u] + (1.0 - sf) * with_ref[:u], with_ref[u:]])
