"""The attention-map store: per-token cross-attention maps of every cross-attention layer, per UNet call (issue #22).

Prompt-to-Prompt (Hertz et al. 2022) and the regional methods built on it read where each prompt token attends:
``softmax(Q K_text^T / sqrt(d))`` of a cross-attention layer, averaged over heads, is a ``(rows, h * w, tokens)`` map.
:class:`AttentionStore` records it with forward pre-hooks on the ``attn2`` modules (so it works whatever processor
sits there: plain, IP-Adapter's decoupled one, a LoRA's), counting sampling calls with a pre-hook on the UNet;
calls made inside a reference pass (:mod:`tailor.core.reference_bank`) are not recorded, nor reference rows fused
into a sampling call. The probabilities are
computed with diffusers' own ``Attention.get_attention_scores`` on the layer's text keys (image-prompt tokens of
decoupled attention are not part of them).

Readers: ``store.current[layer]`` (this call's map: a regional gate applied later in the same call, e.g.
Character-Adapter), ``store.mean[layer]`` (the average over the calls so far), ``store.history`` (every call's maps
when ``keep_history``), and :meth:`AttentionStore.heatmaps` (per-token maps upsampled to one size and averaged over
layers and calls; what ``tailor generate --save-attention WORD`` writes beside the images).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from tailor.core.reference_bank import in_reference_pass, prefix_rows
from tailor.errors import ConfigError, InputError


class AttentionStore:
    """Cross-attention probabilities per layer and call. ``layers``: names of the ``attn2`` modules to record
    (default: every cross-attention layer); ``keep_history``: keep every call's maps (memory grows with steps)."""

    def __init__(self, layers: list[str] | None = None, keep_history: bool = False):
        self.only = None if layers is None else set(layers)
        self.keep_history = keep_history
        self.step = -1  # index of the current sampling call (-1: none yet)
        self.latent_hw: tuple[int, int] | None = None
        self.current: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.history: list[dict[str, torch.Tensor]] = []
        self._hooks: list[Any] = []

    # ------------------------------------------------------------------ attach / detach
    def attach(self, unet) -> AttentionStore:
        layers = [
            name
            for name, m in unet.named_modules()
            if name.endswith("attn2") and getattr(m, "is_cross_attention", False) and "motion_modules" not in name
        ]
        if self.only is not None:
            unknown = sorted(self.only - set(layers))
            if unknown:
                raise ConfigError(f"the attention store has no cross-attention layer {unknown[0]!r} in this UNet.")
            layers = [n for n in layers if n in self.only]
        if not layers:
            raise ConfigError("this UNet has no cross-attention layers; there are no attention maps to store.")
        self.layers = layers
        self._hooks.append(unet.register_forward_pre_hook(self._on_call, with_kwargs=True))
        for name in layers:
            module = unet.get_submodule(name)
            self._hooks.append(module.register_forward_pre_hook(self._recorder(name), with_kwargs=True))
        return self

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def reset(self) -> None:
        self.step, self.latent_hw = -1, None
        for d in (self.current, self.sums, self.counts):
            d.clear()
        self.history.clear()

    # ------------------------------------------------------------------ recording
    def _on_call(self, module, args, kwargs):
        if in_reference_pass():
            return
        sample = args[0] if args else kwargs["sample"]
        self.step += 1
        self.latent_hw = tuple(sample.shape[-2:])
        if self.keep_history and self.current:
            self.history.append(dict(self.current))
        self.current = {}

    def _recorder(self, name: str):
        @torch.no_grad()
        def hook(attn, args, kwargs):
            if in_reference_pass():
                return
            hidden = args[0] if args else kwargs["hidden_states"]
            context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
            if context is None or hidden.ndim != 3:
                return
            n = prefix_rows()  # reference rows fused into this call are not the sampling batch's
            hidden, context = hidden[n:], context[n:]
            probs = token_probabilities(attn, hidden, context)
            self.current[name] = probs
            if name in self.sums and self.sums[name].shape == probs.shape:
                self.sums[name] += probs
                self.counts[name] += 1
            else:
                self.sums[name], self.counts[name] = probs.clone(), 1

        return hook

    def finish(self) -> None:
        """Move the last call's maps into ``history`` (with ``keep_history``)."""
        if self.keep_history and self.current:
            self.history.append(dict(self.current))
            self.current = {}

    # ------------------------------------------------------------------ reading
    @property
    def mean(self) -> dict[str, torch.Tensor]:
        return {k: v / self.counts[k] for k, v in self.sums.items()}

    def heatmaps(self, tokens: list[list[int]], size: tuple[int, int], images: int | None = None) -> torch.Tensor:
        """``(images, len(tokens), H, W)``: for each image the mean attention on each token group (e.g. the BPE
        pieces of one word; their maps sum), averaged over the recorded layers and calls, each layer's map upsampled
        bilinearly to ``size`` = (H, W). ``images``: the number of images; when the recorded batch has twice as many
        rows (classifier-free guidance) the conditional half is used."""
        if not self.sums or self.latent_hw is None:
            raise ConfigError("the attention store recorded nothing; attach it before generating.")
        h0, w0 = self.latent_hw
        out = None
        for m in self.mean.values():
            rows, hw, _ = m.shape
            if images is not None and rows == 2 * images:
                m = m[images:]
            factor = math.sqrt(h0 * w0 / hw)
            h, w = round(h0 / factor), round(w0 / factor)
            groups = torch.stack([m[:, :, idx].sum(-1) for idx in tokens], dim=1)  # (rows, words, hw)
            maps = F.interpolate(groups.reshape(groups.shape[0], len(tokens), h, w).float(), size=size,
                                 mode="bilinear", align_corners=False)  # fmt: skip
            out = maps if out is None else out + maps
        return out / len(self.sums)


def token_probabilities(attn, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``(rows, h * w, tokens)``: the layer's softmax attention over the text tokens, averaged over heads (diffusers'
    ``get_attention_scores``, the probabilities its ``AttnProcessor`` multiplies the values by)."""
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    if attn.group_norm is not None:
        hidden = attn.group_norm(hidden.transpose(1, 2)).transpose(1, 2)
    query = attn.head_to_batch_dim(attn.to_q(hidden))
    key = attn.head_to_batch_dim(attn.to_k(context))
    probs = attn.get_attention_scores(query, key, None)  # (rows * heads, hw, tokens)
    return probs.view(hidden.shape[0], attn.heads, *probs.shape[1:]).mean(1)


def word_tokens(tokenizer, prompt: str, word: str, what: str = "--save-attention word") -> list[int]:
    """Positions of ``word``'s BPE pieces in ``prompt`` as the text encoder sees it (position 0 is the start token);
    every occurrence. One sentence naming ``what`` when the word is not in the prompt."""
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    piece = tokenizer(word, add_special_tokens=False).input_ids
    if not piece:
        raise InputError(f"{what} {word!r} has no tokens; give a word of the prompt.")
    found = [i + j for i in range(len(ids) - len(piece) + 1) if ids[i : i + len(piece)] == piece for j in
             range(len(piece))]  # fmt: skip
    if not found:
        raise InputError(f"{what} {word!r} is not in the prompt {prompt!r}; give a word of the prompt.")
    return found


def colorize(maps, image=None, alpha: float = 0.65):
    """A ``(H, W)`` map in any range -> an RGB heatmap (blue -> red, normalised to its own range), blended over the
    grey version of the ``(H, W, 3)`` float image in [0, 1] when given (so the image's own colours do not read as
    heat); uint8."""
    import numpy as np

    m = np.asarray(maps, dtype=np.float32)
    m = (m - m.min()) / max(float(m.max() - m.min()), 1e-8)
    rgb = np.stack(
        [
            np.clip(1.5 - np.abs(4 * m - 3), 0, 1),
            np.clip(1.5 - np.abs(4 * m - 2), 0, 1),
            np.clip(1.5 - np.abs(4 * m - 1), 0, 1),
        ],
        -1,
    )  # fmt: skip  (a jet-like ramp)
    if image is not None:
        grey = np.asarray(image, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        rgb = alpha * rgb + (1 - alpha) * grey[..., None]
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
