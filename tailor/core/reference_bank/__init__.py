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

The parts: ``bank`` (:class:`ReferenceBank`: the store and its write / read cycle), ``processor`` (the self-attention
processor that writes and reads the banks), ``adain`` (the GroupNorm-statistics reader), ``passes`` (the reference
pass, the fused call, the noising), ``rows`` (which call is running and which rows it holds; CFG row order).
"""

from tailor.core.reference_bank.adain import EPS, adain_points
from tailor.core.reference_bank.bank import ReferenceBank, self_attention_layers
from tailor.core.reference_bank.passes import ReferenceRows, fused_call, noised, reference_pass, run_reference_pass
from tailor.core.reference_bank.processor import ReferenceAttnProcessor, processor_class
from tailor.core.reference_bank.rows import batch_rows, in_reference_pass, match_rows, pass_rows, prefix_rows

__all__ = [
    "EPS",
    "ReferenceAttnProcessor",
    "ReferenceBank",
    "ReferenceRows",
    "adain_points",
    "batch_rows",
    "fused_call",
    "in_reference_pass",
    "match_rows",
    "noised",
    "pass_rows",
    "prefix_rows",
    "processor_class",
    "reference_pass",
    "run_reference_pass",
    "self_attention_layers",
]
