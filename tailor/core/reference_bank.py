"""The reference bank: a reference pass through a UNet writes each transformer block's self-attention input; the
next UNet call reads it (issue #22; used by reference-only attention, StoryGen's context module, a reference UNet).

A *reference pass* runs a reference latent (noised to the current timestep by the step's scheduler, or to a t the
method picks) through a UNet — the base itself or a second, frozen one — inside :func:`reference_pass`. During it
every :class:`ReferenceBank` in ``write`` mode stores, per transformer block, the hidden states that enter its
self-attention (``attn1``: ``norm1(x)``, what sd-webui-controlnet and diffusers' community
``stable_diffusion_reference`` pipeline bank), and, with ``adain``, the per-channel mean / variance of the
resnet / block outputs. At the following ordinary UNet call the bank is read:

``attn`` (concatenation, Zhang's "reference-only"): the block attends to ``[x, bank]``:
    ``out = Attn(Q(x), K([x; f_ref]), V([x; f_ref]))``; with classifier-free guidance the unconditional rows mix
    in plain self-attention with ``style_fidelity`` (``out_u = sf * Attn(x_u, x_u) + (1 - sf) * out_u``), the
    community pipeline's ``uc_mask`` rule; a layer joins when ``weight > i / n`` (layers sorted widest first).
``attn3`` (an added cross-attention, StoryGen's context module): ``out = Attn1(x) + scale * attn3(x, f_ref)`` with
    a module the method owns per layer.
``call`` (the method's own attention over ``[x; bank]``, Infinite-ID's mixed attention with AdaIN-mean on queries
    and keys): ``out = read_fn(attn, x, f_ref, extra)``, ``extra`` the features of the ``attn`` banks reading the
    same layer (concatenated into its keys / values); the same ``style_fidelity`` rule.
``adain`` (GroupNorm statistics, sd-webui-controlnet's "reference_adain"): after each resnet / transformer pair of
    the down / up blocks and after the mid block, ``h = (h - mu) / sigma * sigma_ref + mu_ref`` (per channel, eps
    1e-6 on the variance), the same ``style_fidelity`` rule, a point joining when ``weight >= gn_weight`` (mid 0,
    down ``2 (1 - w / n)``, up ``2 w / n``).

A *fused* pass (:class:`ReferenceRows`, :func:`fused_call`; a method returns it in ``StepExtras.reference_rows``)
runs the reference rows in front of the sampling batch in the sampling call itself: each layer writes from the first
rows and the others read them at once, so a step costs one UNet call of ``R + B`` rows instead of two calls (the
world base: ~1.3x the plain step instead of ~1.8x); other methods' residuals get zero rows in front (a separate pass
gets none either), the attention-map store skips those rows. After the call the rows' own prediction is in
``ReferenceRows.prediction`` (a reader that denoises its rows as a stream of their own steps them with it).

The processors chain: each ``attn1`` gets a :class:`ReferenceAttnProcessor` wrapping the processor that was there
(plain, a hypernetwork's, ...), several banks may share it, and IP-Adapter's decoupled processors on ``attn2`` are
untouched. Rows keep the CFG order: a bank written with fewer rows than the reading call (one reference row per
image shared by its unconditional and conditional rows) is repeated in ``[uncond..., cond...]`` order. While a
reference pass runs no bank reads, and :func:`in_reference_pass` tells other hooks (the attention-map store, the
image-prompt processors) that the call is not a sampling call.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tailor.errors import ConfigError

_PASS: contextvars.ContextVar[bool] = contextvars.ContextVar("tailor_reference_pass", default=False)
#: during a reference pass (or a fused call): which row of the sampling batch each UNet row stands for (or None)
_ROWS: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("tailor_reference_rows", default=None)
#: during a fused call: how many reference rows run in front of the sampling batch
_PREFIX: contextvars.ContextVar[int] = contextvars.ContextVar("tailor_reference_prefix", default=0)
EPS = 1e-6  # the community pipeline's floor on the variance


class _PassDone(Exception):
    """Raised inside a reference pass once every writing bank has what it reads: the rest of the UNet is skipped."""


def in_reference_pass() -> bool:
    """True while :func:`reference_pass` runs a UNet (hooks that record or read sampling calls skip it)."""
    return _PASS.get()


def pass_rows(x: torch.Tensor) -> torch.Tensor:
    """Per-row inputs of the sampling batch (image-prompt tokens) as the rows of the reference pass now running
    (unchanged outside a pass, or when the pass did not say which rows it stands for)."""
    rows = _ROWS.get()
    return x if rows is None else x[rows.to(x.device)]


def prefix_rows() -> int:
    """How many reference rows run in front of the sampling batch in the UNet call now running (0: none)."""
    return _PREFIX.get()


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


def match_rows(x: torch.Tensor, rows: int, what: str = "reference features") -> torch.Tensor:
    """``x`` repeated to ``rows`` rows (``[a, b] -> [a, b, a, b]``: the CFG halves stay in order)."""
    if x.shape[0] == rows:
        return x
    if rows % x.shape[0]:
        raise RuntimeError(f"{what} have {x.shape[0]} rows but the UNet batch has {rows}; run the reference pass "
                           f"for this batch.")  # fmt: skip
    return x.repeat(rows // x.shape[0], *([1] * (x.ndim - 1)))


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
            self._hooks.append(module.register_forward_hook(self._adain_hook(index)))

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

    def _wrote(self, event: tuple[str, Any]) -> None:
        self._seen.append(event)
        if event == self._last:
            self.mode = "done"
            _maybe_stop()

    # ------------------------------------------------------------------ writing
    def write(self, name: str, hidden_states: torch.Tensor) -> None:
        self.features[name] = hidden_states.detach()
        self._wrote(("attn", name))

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
        sel = _ROWS.get()
        if sel is not None and f.shape[0] != rows and sel.numel() == rows and f.shape[0] > int(sel.max()):
            f = f[sel.to(f.device)]  # a call on some rows of the sampling batch (batch_rows): the bank's rows follow
        return match_rows(f, rows)

    # ------------------------------------------------------------------ AdaIN
    def _adain_hook(self, index: int):
        def hook(module, args, output):
            is_tuple = isinstance(output, tuple)
            h = output[0] if is_tuple else getattr(output, "sample", output)
            n = _PREFIX.get()
            if self.mode == "fused" and n:
                ref, main = h[:n], h[n:]
                if self.scale >= self.points[index][1]:
                    self._record_stats(index, ref)
                if not self.reading() or index not in self.stats:
                    return None
                h = torch.cat([ref, self._adain(main, *self.stats[index])])
            elif self.mode == "write" and in_reference_pass():
                if self.scale >= self.points[index][1]:
                    self._record_stats(index, h)
                self._wrote(("adain", index))
                return None
            elif not self.reading() or index not in self.stats:
                return None
            else:
                h = self._adain(h, *self.stats[index])
            if is_tuple:
                return (h, *output[1:])
            if hasattr(output, "sample"):
                output.sample = h
                return output
            return h

        return hook

    def _record_stats(self, index: int, h: torch.Tensor) -> None:
        var, mean = torch.var_mean(h, dim=(2, 3), keepdim=True, correction=0)
        if self.groups > 1:  # several references: the average of their statistics
            var = var.view(self.groups, -1, *var.shape[1:]).mean(0)
            mean = mean.view(self.groups, -1, *mean.shape[1:]).mean(0)
        self.stats[index] = (mean.detach(), var.detach())

    def _adain(self, h: torch.Tensor, mean_ref: torch.Tensor, var_ref: torch.Tensor) -> torch.Tensor:
        rows = h.shape[0]
        mean_ref, var_ref = match_rows(mean_ref, rows, "reference statistics"), match_rows(var_ref, rows)
        var, mean = torch.var_mean(h, dim=(2, 3), keepdim=True, correction=0)
        std = var.clamp_min(EPS) ** 0.5
        std_ref = var_ref.clamp_min(EPS) ** 0.5
        matched = (h - mean) / std * std_ref + mean_ref
        return self.mix(matched, h)

    def mix(self, with_ref: torch.Tensor, plain: torch.Tensor | None) -> torch.Tensor:
        """``style_fidelity``: the unconditional rows become ``sf * plain + (1 - sf) * with_ref``."""
        u, sf = self.uncond_rows, self.style_fidelity
        if not u or sf <= 0 or plain is None:
            return with_ref
        return torch.cat([sf * plain[:u] + (1.0 - sf) * with_ref[:u], with_ref[u:]])


class ReferenceAttnProcessor:
    """Wraps a self-attention layer's processor: records the layer's input for writing banks and, for reading
    banks, attends to ``[x; bank]`` (``attn``) or adds ``attn3(x, bank)``. A plain object, so the banks never become
    part of the UNet's state dict."""

    def __init__(self, base, name: str):
        self.base = base
        self.name = name
        self.banks: list[ReferenceBank] = []

    def add(self, bank: ReferenceBank) -> None:
        if not any(b is bank for b in self.banks):
            self.banks.append(bank)

    def remove(self, bank: ReferenceBank) -> None:
        self.banks = [b for b in self.banks if b is not bank]

    def __call__(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    def run(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if in_reference_pass():
            for bank in self.banks:
                if bank.mode == "write":
                    bank.write(self.name, hidden_states)  # may end the pass here
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb=temb, **kwargs)
        n = _PREFIX.get()
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


_WRITING: contextvars.ContextVar[tuple[ReferenceBank, ...]] = contextvars.ContextVar("tailor_banks", default=())


def _maybe_stop() -> None:
    """Stop the pass once every bank writing in it is done (the UNet's remaining layers would change nothing)."""
    banks = _WRITING.get()
    if banks and all(b.mode == "done" for b in banks):
        raise _PassDone


@functools.cache
def processor_class(base_cls: type) -> type:
    """A :class:`ReferenceAttnProcessor` subclass whose ``__call__`` shows ``base_cls``'s signature: diffusers'
    ``Attention.forward`` drops the cross-attention kwargs a processor's signature does not name, so the wrapper must
    advertise the wrapped processor's (IP-Adapter masks, scales, ...)."""

    def __call__(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    functools.update_wrapper(__call__, base_cls.__call__)
    return type(f"Reference{base_cls.__name__}", (ReferenceAttnProcessor,), {"__call__": __call__})


@contextlib.contextmanager
def reference_pass(banks: list[ReferenceBank], groups: int = 1, rows: torch.Tensor | None = None) -> Iterator[None]:
    """Run a UNet inside: ``banks`` record (``groups`` references per row, stacked reference-major), then read at
    the next ordinary call; ``rows``: the sampling batch's row each pass row stands for (:func:`pass_rows`). The
    first pass runs the whole UNet and learns the order of the writes; later ones stop after the last write a bank
    reads at its current scale."""
    for b in banks:
        b.begin_write(groups)
    token, token_rows, token_banks = _PASS.set(True), _ROWS.set(rows), _WRITING.set(tuple(banks))
    try:
        yield
    except _PassDone:
        pass
    finally:
        _PASS.reset(token)
        _ROWS.reset(token_rows)
        _WRITING.reset(token_banks)
        for b in banks:
            b.end_write()


@contextlib.contextmanager
def batch_rows(rows: torch.Tensor) -> Iterator[None]:
    """Run a UNet call on some rows of the sampling batch (a guidance hook's extra row, e.g. StoryGen's
    unconditional one): per-row inputs of other methods (image-prompt tokens) follow them (:func:`pass_rows`)."""
    token = _ROWS.set(rows)
    try:
        yield
    finally:
        _ROWS.reset(token)


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
    tokens = (_PREFIX.set(n), _ROWS.set(rows))
    try:
        out = unet(latents, timestep, encoder_hidden_states=hidden, added_cond_kwargs=added, return_dict=False,
                   **extra)[0]  # fmt: skip
    finally:
        _PREFIX.reset(tokens[0])
        _ROWS.reset(tokens[1])
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
