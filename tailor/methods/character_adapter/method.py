"""Character-Adapter (Ma et al. 2024): training-free region-level image prompts on an IP-Adapter.

1. *Prompt-guided segmentation*: the reference is cut into regions, one per region word (a segmenter class: the
   world segmenter named by ``segmenter``, by default ``segmenter_scenes``, or masks given as ``inputs["masks"]`` =
   {word: HxW bool}); each region is cropped to its box on a white ground.
2. *Region-level adapters*: each region goes through the IP-Adapter's encoder and projection on its own, giving its
   own tokens; every cross-attention layer adds one decoupled attention per region (``ImageBranch.regions`` in
   :mod:`tailor.core.attention`) instead of one over the whole image.
3. *Attention dynamic fusion*: region r's output is multiplied by a soft mask, the cross-attention map of its word
   in the same layer and call (:class:`~tailor.core.attention_store.AttentionStore`), normalised to [0, 1] by its
   maximum over the image; with ``exclusive`` a pixel keeps only the region whose word attends to it most. The
   unconditional rows use the conditional rows' masks. [?] the paper's exact normalisation and thresholding are not
   public as code; this is the formulation its text describes.

No weights of its own: ``tailor train character_adapter`` is refused; the IP-Adapter is loaded from ``ip_adapter``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

from tailor.core.attention_store import AttentionStore, word_tokens
from tailor.core.method import Method
from tailor.errors import IncompatibleError, InputError
from tailor.methods.character_adapter.config import CharacterAdapterConfig

log = logging.getLogger("tailor")


def region_crop(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The masked region on white, cropped to its box and padded to a square (what the image encoder reads)."""
    arr = np.asarray(image.convert("RGB")).copy()
    if mask.shape != arr.shape[:2]:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.NEAREST)) > 127
    arr[~mask] = 255
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(y1 - y0, x1 - x0)
    out = np.full((side, side, 3), 255, np.uint8)
    oy, ox = (side - (y1 - y0)) // 2, (side - (x1 - x0)) // 2
    out[oy : oy + y1 - y0, ox : ox + x1 - x0] = arr[y0:y1, x0:x1]
    return Image.fromarray(out)


def segment(image: Image.Image, segmenter: str = "segmenter_scenes") -> tuple[np.ndarray, list[str]]:
    """A world segmenter's (oracle name or file) per-pixel class map of ``image`` and its class names."""
    from tailor.world.zoo.oracles import load_oracle, to_unit

    seg = load_oracle(segmenter)  # a missing name or file: one sentence
    if getattr(seg, "config", {}).get("kind") != "segmenter":
        raise InputError(f"character_adapter segmenter {segmenter!r} is a {seg.config.get('kind')} oracle, not a "
                         f"segmenter; pass segmenter_scenes or a segmenter oracle file.")  # fmt: skip
    with torch.no_grad():
        labels = seg(to_unit([image])).argmax(1)[0].numpy()
    return labels, list(seg.classes)


class CharacterAdapterMethod(Method):
    """Attach with ``pipe.attach(CharacterAdapterMethod(regions=["star", "heart"]), weight=1.0, reference=img)``."""

    name = "character_adapter"
    text_context = "edits"  # it gates each region by its word's attention map
    config_cls = CharacterAdapterConfig
    training_free = True

    def __init__(self, config: CharacterAdapterConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.inner = None  # the IP-Adapter
        self.store: AttentionStore | None = None
        self._gates: dict[str, torch.Tensor] = {}  # per region: (UNet rows, tokens) weights of its word

    # ------------------------------------------------------------------ attach / detach
    def build(self, components) -> None:
        from tailor.core.artifacts import load
        from tailor.core.method import get_spec

        source = str(self.config.ip_adapter)
        if source.startswith("untrained:"):  # a fresh IP-Adapter over that image encoder (tests, smoke runs)
            inner = get_spec("ip_adapter").method(image_encoder=source.split(":", 1)[1])
        else:
            inner = load(source)
        if inner.name != "ip_adapter":
            raise IncompatibleError(f"character_adapter ip_adapter={self.config.ip_adapter} is a {inner.name} file, "
                                    f"not an IP-Adapter; pass an IP-Adapter.")  # fmt: skip
        self.inner = inner

    def attach(self, components) -> None:
        with torch.random.fork_rng(devices=[]):  # an untrained IP-Adapter's projection: the same for the same options
            torch.manual_seed(0)
            self.inner.patch(components)
        self.store = AttentionStore().attach(components.unet)

    def detach(self, components) -> None:
        if self.store is not None:
            self.store.detach()
        self.store = None
        if self.inner is not None:
            self.inner.unpatch()

    def set_scale(self, scale: float) -> None:
        self.scale = scale
        if self.inner is not None:
            self.inner.set_scale(scale)

    # ------------------------------------------------------------------ regions
    def regions(self, image: Image.Image, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Region word -> mask of the reference (given masks win; else the segmenter's classes)."""
        given = inputs.get("masks")
        if given:
            return {str(w): np.asarray(m, bool) for w, m in given.items()}
        labels, classes = segment(image, str(self.config.segmenter))
        wanted = list(self.config.regions)
        unknown = [w for w in wanted if w not in classes[1:]]
        if unknown:
            raise InputError(f"character_adapter region {unknown[0]!r} is not a segmenter class; pick from "
                             f"{', '.join(classes[1:])}.")  # fmt: skip
        found = {}
        for i, word in enumerate(classes):
            if i == 0 or (wanted and word not in wanted):
                continue
            mask = labels == i
            if mask.any() and mask.mean() >= self.config.min_area:
                found[word] = mask
        missing = [w for w in wanted if w not in found]
        if missing or not found:
            what = f"region {missing[0]!r}" if missing else "region"
            raise InputError(f"character_adapter found no {what} in the reference image; give a reference showing "
                             f"it or other --character-adapter-regions.")  # fmt: skip
        return found

    def encode(self, cond, inputs: dict[str, Any]):
        if self.inner is None or inputs.get("reference") is None:
            if self.inner is not None and "pixel_values" not in inputs:
                raise InputError("character_adapter needs a reference image: attach it with reference=IMAGE "
                                 "(CLI: --character-adapter IMG).")  # fmt: skip
            return cond
        ref = inputs["reference"]
        image = (ref[0] if isinstance(ref, list | tuple) else ref).convert("RGB")
        masks = self.regions(image, inputs)
        tokenizer = self.components.tokenizer
        prompts = cond.prompts or [""] * cond.batch_size
        branch, rows = self.inner.branch, cond.encoder_hidden_states.shape[0]
        groups = []
        for word, mask in masks.items():
            weights = torch.zeros(rows, cond.encoder_hidden_states.shape[1])
            for b, prompt in enumerate(prompts):
                hits = word_tokens(tokenizer, prompt, word, "character_adapter region word")
                weights[(rows - cond.batch_size) + b, hits] = 1.0  # the conditional row
            self.inner.encode(cond, {"ip_image": region_crop(image, mask)})
            groups.append((word, branch.tokens, weights))
        branch.tokens = None
        self._words = [w for w, _, _ in groups]
        self._weights = torch.stack([w for _, _, w in groups])  # (regions, rows, tokens)
        self._cfg_rows = cond.batch_size if cond.cfg else 0
        branch.regions = [(tokens, self._gate(r)) for r, (_, tokens, _) in enumerate(groups)]
        self.store.reset()
        return cond

    def _gate(self, region: int):
        def gate(processor_name: str, out: torch.Tensor) -> torch.Tensor | None:
            masks = self._masks(processor_name.removesuffix(".processor"))
            return None if masks is None else masks[region].unsqueeze(-1)

        return gate

    def _masks(self, layer: str) -> torch.Tensor | None:
        """(regions, rows, hw): each region word's attention in this layer and call, normalised to [0, 1]."""
        probs = self.store.current.get(layer) if self.store is not None else None
        if probs is None:
            return None
        w = self._weights.to(probs)  # (R, rows, T)
        maps = torch.einsum("bst,rbt->rbs", probs, w)
        u = self._cfg_rows
        if u:  # unconditional rows: the conditional rows' masks
            maps = torch.cat([maps[:, u:], maps[:, u:]], dim=1)
        maps = maps / maps.amax(dim=2, keepdim=True).clamp_min(1e-8)
        if self.config.exclusive and maps.shape[0] > 1:
            maps = maps * (maps >= maps.amax(dim=0, keepdim=True)).to(maps)
        return maps
