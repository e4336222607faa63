"""The processor on each self-attention layer that the reference banks write and read through.

It wraps the processor that was there (plain, a hypernetwork's, ...); several banks share it. In a reference pass it
hands the layer's input to the writing banks; in a fused call it writes from the first rows and reads them at once;
in an ordinary call it reads every reading bank: ``attn`` (attend to ``[x; bank]``), ``call`` (the method's own
attention over ``[x; bank]``) and ``attn3`` (an added cross-attention), with the ``style_fidelity`` rule.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from tailor.core.reference_bank.rows import in_reference_pass, prefix_rows


class ReferenceAttnProcessor:
    """Wraps a self-attention layer's processor: records the layer's input for writing banks and, for reading
    banks, attends to ``[x; bank]`` (``attn``) or adds ``attn3(x, bank)``. A plain object, so the banks never become
    part of the UNet's state dict."""

    def __init__(self, base, name: str):
        self.base = base
        self.name = name
        #: the :class:`~tailor.core.reference_bank.bank.ReferenceBank` s on this layer (each installs itself here)
        self.banks: list[Any] = []

    def add(self, bank) -> None:
        if not any(b is bank for b in self.banks):
            self.banks.append(bank)

    def remove(self, bank) -> None:
        self.banks = [b for b in self.banks if b is not bank]

    def __call__(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    def run(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if in_reference_pass():
            for bank in self.banks:
                if bank.mode == "write":
                    bank.write(self.name, hidden_states)  # may end the pass here
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb=temb, **kwargs)
        n = prefix_rows()
        if n and any(b.mode == "fused" for b in self.banks):  # reference rows first: write, then read them
            ref = hidden_states[:n]
            for bank in self.banks:
                if bank.mode == "fused":
                    bank.write(self.name, ref)
            ref_out = self.base(attn, ref, None, attention_mask, temb=temb, **kwargs)
            out = self.read(attn, hidden_states[n:], None, attention_mask, temb, **kwargs)
            return torch.cat([ref_out, out])
        return self.read(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

    def read(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs):
        """The layer's output for the sampling rows, reading every bank that reads."""
        rows = hidden_states.shape[0]
        concat = [b for b in self.banks if b.reader == "attn" and b.reading()]
        feats = [(b, f) for b in concat if (f := b.feature(self.name, rows)) is not None]
        calls = [b for b in self.banks if b.reader == "call" and b.reading()]
        called = [(b, f) for b in calls if (f := b.feature(self.name, rows)) is not None][:1]  # one replaces attn1
        if called:
            bank, f = called[0]
            extra = [g.to(hidden_states) for _, g in feats]
            out = bank.read_fn(attn, hidden_states, f.to(hidden_states), extra)
            if bank.uncond_rows and bank.style_fidelity > 0:
                u = bank.uncond_rows
                plain = self.base(attn, hidden_states[:u], encoder_hidden_states, attention_mask, temb=temb, **kwargs)
                out = bank.mix(out, torch.cat([plain, out[u:]]))
        elif feats:
            context = torch.cat([hidden_states] + [f.to(hidden_states) for _, f in feats], dim=1)
            # the community pipeline drops the attention mask when it reads (self-attention has none in SD)
            out = self.base(attn, hidden_states, context, None, temb=temb, **kwargs)
            bank = feats[0][0]
            if bank.uncond_rows and bank.style_fidelity > 0:
                u = bank.uncond_rows
                plain = self.base(attn, hidden_states[:u], encoder_hidden_states, attention_mask, temb=temb, **kwargs)
                out = bank.mix(out, torch.cat([plain, out[u:]]))
        else:
            out = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb=temb, **kwargs)
        for bank in self.banks:
            if bank.reader == "attn3" and bank.reading():
                f = bank.feature(self.name, rows)
                if f is not None:
                    out = out + bank.scale * bank.attn3[self.name](hidden_states, encoder_hidden_states=f.to(out))
        return out


@functools.cache
def processor_class(base_cls: type) -> type:
    """A :class:`ReferenceAttnProcessor` subclass whose ``__call__`` shows ``base_cls``'s signature: diffusers'
    ``Attention.forward`` drops the cross-attention kwargs a processor's signature does not name, so the wrapper must
    advertise the wrapped processor's (IP-Adapter masks, scales, ...)."""

    def __call__(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    functools.update_wrapper(__call__, base_cls.__call__)
    return type(f"Reference{base_cls.__name__}", (ReferenceAttnProcessor,), {"__call__": __call__})
