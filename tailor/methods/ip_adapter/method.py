"""IP-Adapter and IP-Adapter-Plus (Ye et al. 2023): an image prompt through decoupled cross-attention; UNet frozen.

A frozen CLIP image encoder (``image_encoder``: the world zoo's vision tower, ``tiny`` or a folder) embeds the
reference image; a projection turns it into image tokens (plain: 4 tokens from the projected embedding; Plus: a
Perceiver resampler's 16 queries over the penultimate hidden states); ``tailor.core.attention`` adds
``scale * Attn(Q, to_k_ip(tokens), to_v_ip(tokens))`` to every cross-attention layer. Trained: the projection and
``to_k_ip`` / ``to_v_ip`` (initialised from ``to_k`` / ``to_v``), eps-MSE, AdamW 1e-4, weight decay 0.01.

``encode(cond, inputs)``: at inference ``inputs["ip_image"]`` (image, path, array, tensor, or a list: several images
concatenate their tokens) gives the cond half and, as diffusers does, a zero embedding (Plus: the encoder's output
for an all-zero input) the uncond half; encoder outputs are cached by image hash. In training the batch's own
``pixel_values`` are the image prompt, and each sample drops text / image / both with the configured probabilities
(one uniform draw per sample from its trainer position, so resumed runs draw the same).

Files: ``ip_adapter.safetensors`` in the official layout (see ``formats.py``; diffusers' ``load_ip_adapter`` reads it)
with tailor metadata; official ``.safetensors`` / ``.bin`` files load through ``tailor.load``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailor.core.attention import is_attached
from tailor.core.components import load_image_encoder
from tailor.core.image_prompt import ImagePromptMethod
from tailor.core.io import meta_json, read_metadata
from tailor.core.method import ARTIFACT_FORMAT, load_module_state
from tailor.core.resampler import resampler_sizes
from tailor.errors import FormatError, IncompatibleError, InputError
from tailor.methods.ip_adapter import formats
from tailor.methods.ip_adapter.config import IPAdapterConfig
from tailor.methods.ip_adapter.modules import (
    DROP_BOTH,
    DROP_IMAGE,
    DROP_TEXT,
    EmbeddingCache,
    as_images,
    drop_code,
    encode_pixels,
    encoder_width,
    image_key,
    make_projection,
    pixels_for_encoder,
)

_ENCODERS: dict[tuple[str, str], Any] = {}  # (name, device) -> (encoder, processor); frozen, shared by adapters


def image_encoder(name: str, device) -> tuple[Any, Any]:
    key = (str(name), str(device))
    if key not in _ENCODERS:
        _ENCODERS[key] = load_image_encoder(name, device)
    return _ENCODERS[key]


class IPAdapterMethod(ImagePromptMethod):
    """Train (or load) an IP-Adapter; attach with ``pipe.attach(method, weight=scale, ip_image=img)``."""

    name = "ip_adapter"
    config_cls = IPAdapterConfig
    weight_word = "scale"

    def __init__(self, config: IPAdapterConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.encoder = self.processor = None
        self.cache = EmbeddingCache()
        self.block_scale_spec: Any = None  # set_block_scales(): a float, per-layer list or InstantStyle dict
        self._drop_seed: int | None = None
        self._fallback_image = None  # a training image, for the trainer's sample grid
        self._empty_text: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._source_file = "the IP-Adapter"

    @classmethod
    def file_layout(cls):
        """This folder's ``formats`` (the official IP-Adapter layout; InstantID and PuLID files share it)."""
        return formats

    @property
    def is_plus(self) -> bool:
        return bool(self.config.plus)

    # ------------------------------------------------------------------ attach / detach
    def patch(self, components) -> None:
        """``Method.patch``; a failure (a file for another base) leaves the method detached as before."""
        pending = self._pending_state
        try:
            super().patch(components)
        except Exception:
            if self.branch is None or not is_attached(components.unet, self.branch):
                self.components, self._built, self._pending_state = None, False, pending
                self.proj = self.branch = None
            raise

    def projection(self, components) -> nn.Module:
        c = self.config
        self.encoder, self.processor = image_encoder(c.image_encoder, components.device)
        width, cad = encoder_width(self.encoder, c.plus), components.cross_attention_dim
        return make_projection(c.plus, width, cad, c.tokens, c.resampler_depth, c.resampler_width, c.resampler_heads)

    def attach(self, components) -> None:
        self._apply_block_scales()
        super().attach(components)

    # ------------------------------------------------------------------ scales
    def set_block_scales(self, spec: float | list[float] | dict | None) -> None:
        """Per-layer factors: a float, one value per cross-attention layer, or an InstantStyle dict such as
        ``{"up": {"block_0": [0.0, 1.0, 0.0]}}`` (blocks not named get 0, as in diffusers)."""
        self.block_scale_spec = spec
        if self.branch is not None and self.components is not None:
            self._apply_block_scales()

    def _apply_block_scales(self) -> None:
        spec = self.block_scale_spec if self.block_scale_spec is not None else (list(self.config.block_scales) or None)
        self.branch.set_layer_scales(self.components.unet, spec)

    # ------------------------------------------------------------------ hooks
    def encode(self, cond, inputs: dict[str, Any]):
        if self.branch is None:
            return cond
        if "ip_image" in inputs and inputs["ip_image"] is not None:
            images = as_images(inputs["ip_image"])
        elif "pixel_values" in inputs:
            return self._encode_batch(cond, inputs)
        elif self._fallback_image is not None:
            images = as_images(self._fallback_image)
        else:
            raise InputError("ip_adapter needs a reference image: attach it with ip_image=IMAGE "
                             "(CLI: --ip-adapter PATH --ip-image IMAGE).")  # fmt: skip
        plus, dtype = self.config.plus, next(self.proj.parameters()).dtype
        conds, unconds = [], []
        for img in images:
            hit = self.cache.get(image_key(img))
            if hit is None:
                px = self.processor(img, return_tensors="pt").pixel_values
                emb = encode_pixels(self.encoder, px, plus)
                zero = encode_pixels(self.encoder, torch.zeros_like(px), plus) if plus else torch.zeros_like(emb)
                hit = (emb[0], zero[0])
                self.cache.put(image_key(img), hit)
            conds.append(hit[0])
            unconds.append(hit[1])
        n, b = len(images), cond.batch_size
        rows = torch.stack(unconds + conds) if cond.cfg else torch.stack(conds)
        tokens = self.proj(rows.to(dtype))  # (n or 2n, T, D), like diffusers' per-image projection
        tokens = tokens.reshape(-1, n * tokens.shape[1], tokens.shape[2])  # images of one prompt: tokens concatenate
        halves = [t.unsqueeze(0).expand(b, -1, -1) for t in tokens]
        self.branch.tokens = torch.cat(halves)
        return cond

    def _encode_batch(self, cond, inputs: dict[str, Any]):
        """Training / validation: the batch's images are the prompts; ``ip_drop`` codes drop text and/or image."""
        px = pixels_for_encoder(inputs["pixel_values"], self.processor)
        codes = inputs.get("ip_drop") or [0] * px.shape[0]
        drop_img = torch.tensor([c in (DROP_IMAGE, DROP_BOTH) for c in codes], device=px.device)
        if self.config.plus:  # the official Plus script zeroes the CLIP input; plain zeroes the embedding
            px = torch.where(drop_img.view(-1, 1, 1, 1), torch.zeros_like(px), px)
        emb = encode_pixels(self.encoder, px, self.config.plus)
        if not self.config.plus:
            emb = torch.where(drop_img.view(-1, 1).to(emb.device), torch.zeros_like(emb), emb)
        self.branch.tokens = self.proj(emb.to(next(self.proj.parameters()).dtype))
        drop_txt = [c in (DROP_TEXT, DROP_BOTH) for c in codes]
        if not any(drop_txt):
            return cond
        hidden, pooled = self._empty_prompt()
        mask = torch.tensor(drop_txt, device=hidden.device)
        states = torch.where(mask.view(-1, 1, 1), hidden.to(cond.encoder_hidden_states), cond.encoder_hidden_states)
        added = cond.added_cond_kwargs
        if added and pooled is not None and "text_embeds" in added:
            te = added["text_embeds"]
            added = {**added, "text_embeds": torch.where(mask.view(-1, 1), pooled.to(te), te)}
        return dataclasses.replace(cond, encoder_hidden_states=states, added_cond_kwargs=added)

    def _empty_prompt(self):
        if self._empty_text is None:
            from tailor.core.prompts import encode_text

            with torch.no_grad():
                self._empty_text = encode_text(self.components, [""])
        return self._empty_text

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        """Remember the run's seed (drop draws) and one training image (the trainer's sample grid)."""
        self._drop_seed = int(config.seed)
        if len(dataset):
            self._fallback_image = dataset[0]["pixel_values"]
        return dataset

    def expand_batch(self, batch, keys, positions):
        """Add each sample's drop code (training steps only; validation keeps text and image)."""
        if torch.is_grad_enabled() and self._drop_seed is not None:
            c = self.config
            batch = {**batch, "ip_drop": [drop_code(self._drop_seed, p, c.drop_text, c.drop_image, c.drop_both)
                                          for p in positions]}  # fmt: skip
        return batch, keys, positions

    # ------------------------------------------------------------------ weights
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        proj, ip = formats.split(state)
        self._check(proj, ip)
        what = f"ip_adapter ({self._source_file})"
        load_module_state(self.proj, formats.proj_from_official(proj, self.config.plus), what)
        load_module_state(self.branch, formats.branch_from_official(ip, len(self.branch.layer_names)), what)

    def _check(self, proj: dict, ip: dict) -> None:
        """One-sentence errors for a file made for another base, image encoder or variant."""
        src, c = self._source_file, self.config
        if formats.is_plus(proj) != c.plus:
            raise FormatError(f"{src} is {'a Plus' if not c.plus else 'a plain'} IP-Adapter but plus={c.plus}; "
                              f"load it with plus={not c.plus}.")  # fmt: skip
        k_ip = [k for k in ip if k.endswith(".to_k_ip.weight")]
        if not k_ip:
            raise FormatError(f"{src} has no ip_adapter.<n>.to_k_ip weights; the file is incomplete.")
        file_cad, cad = int(ip[k_ip[0]].shape[1]), self.components.cross_attention_dim
        if file_cad != cad:
            raise IncompatibleError(f"{src} was made for cross-attention width {file_cad} but this base has width "
                                    f"{cad}; use an IP-Adapter trained for this base.")  # fmt: skip
        if len(k_ip) != len(self.branch.layer_names):
            raise IncompatibleError(
                f"{src} has {len(k_ip)} cross-attention layers but this base has "
                f"{len(self.branch.layer_names)}; use an IP-Adapter trained for this base."
            )
        file_w = int((proj["proj_in.weight"] if c.plus else proj["proj.weight"]).shape[1])
        width = encoder_width(self.encoder, c.plus)
        if file_w != width:
            raise IncompatibleError(f"{src} reads image features of width {file_w} but image encoder "
                                    f"{c.image_encoder!r} gives width {width}; pass the image encoder it was "
                                    f"trained with.")  # fmt: skip

    def metadata(self) -> dict:
        c, comps = self.config, self.components
        extra = {"image_encoder": c.image_encoder, "plus": c.plus, "num_tokens": c.tokens}
        if comps is not None:
            extra["cross_attention_dim"] = comps.cross_attention_dim
        if self.encoder is not None:
            extra["image_embed_dim"] = encoder_width(self.encoder, c.plus)
        return {**super().metadata(), **{k: str(v) for k, v in extra.items()}}

    # ------------------------------------------------------------------ files
    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        return formats.sniff(path, metadata)

    @classmethod
    def from_file(cls, path: str | Path, image_encoder: str | None = None) -> IPAdapterMethod:
        """A tailor ``ip_adapter.safetensors`` or an official IP-Adapter ``.safetensors`` / ``.bin``; official files
        do not name their image encoder: ``image_encoder`` (default ``world``) does; a Plus file's resampler sizes
        (width, heads, depth, queries) are read from its weights, as diffusers' loader reads them."""
        path = Path(path)
        meta = read_metadata(path) if path.suffix == ".safetensors" else {}
        state = formats.read(path)
        if meta.get("format") == ARTIFACT_FORMAT and meta.get("method") == cls.name:
            config = IPAdapterConfig.from_dict(meta_json(meta, "config", {}), source=str(path))
        else:
            proj, ip = formats.split(state)
            if not proj or not ip:
                raise FormatError(f"{path} is not an IP-Adapter file (no image_proj.* / ip_adapter.* keys).")
            plus = formats.is_plus(proj)
            k_ip = next((v for k, v in ip.items() if k.endswith(".to_k_ip.weight")), None)
            if k_ip is None:
                raise FormatError(f"{path} has no ip_adapter.<n>.to_k_ip weights; the file is incomplete.")
            try:
                width = int(k_ip.shape[1])
                tokens = int(proj["latents"].shape[1]) if plus else int(proj["proj.weight"].shape[0]) // width
            except (KeyError, IndexError, ZeroDivisionError) as e:  # a projection missing or of too few dimensions
                raise FormatError(
                    f"{path} has image_proj / ip_adapter weights of unexpected shapes ({type(e).__name__}: {e}); the "
                    f"file is damaged — re-download it."
                ) from e
            options: dict[str, Any] = {"plus": plus, "num_tokens": tokens}
            if plus:  # the resampler's own width, heads and depth, read from the file as diffusers' loader does
                sizes = resampler_sizes(proj, str(path))
                options.update(resampler_width=sizes["width"], resampler_heads=sizes["heads"],
                               resampler_depth=sizes["depth"])  # fmt: skip
            config = IPAdapterConfig.from_dict(options, source=str(path))
        if image_encoder is not None:
            config = config.replace(image_encoder=image_encoder)
        method = cls(config)
        method._source_file = str(path)
        method.load_state_dict(state)
        return method
