"""Infinite-ID (Wu et al. 2024, arXiv:2403.11781): identity-preserved personalization by decoupling ID and semantics.

ID tokens: the conditioning face embedder's embedding (-> a Perceiver Resampler) and the CLIP image embedding of the
same face (-> IP-Adapter's linear + LayerNorm projection), concatenated, in decoupled cross-attention
(:mod:`tailor.core.attention`). Trained: the ID encoder and ``to_k_ip`` / ``to_v_ip``; UNet, face embedder and CLIP
tower frozen.

*Identity-enhanced training* (``text_off``): the text cross-attention is switched off — the prompt embeddings become
zeros, which, the SD cross-attention ``to_k`` / ``to_v`` having no bias, makes ``Attn(Q, K_text, V_text)`` exactly 0 —
so the image cross-attention learns the identity alone (the reference: another render of the item's identity,
:class:`~tailor.methods.infinite_id.modules.IDPairs`); ``id_drop`` of the samples get zero embeddings (the ID
stream's unconditional prediction).

*Inference* (``mixed``): each image is two streams in one UNet batch. The ID stream (text off, ID tokens on, guided
by ``id_guidance`` against zero ID tokens) starts from the text stream's latents and is denoised by its own copy of
the sampler; its rows run in front of the batch in the sampling call (a fused reference pass,
:mod:`tailor.core.reference_bank`) and write every self-attention input into a bank. The text stream (the prompt,
no ID tokens unless ``text_id_scale``) reads it with mixed attention, ``Attn(Q_t, [K_i; K_t], [V_i; V_t])``, after
AdaIN-mean of its queries and keys onto the ID stream's (:func:`~tailor.methods.infinite_id.modules.mixed_attention`).
The weight scales the ID stream's image cross-attention; start/end bound the steps the streams interact.

File: ``infinite_id.safetensors`` (``infinite_id.0.*`` the ID encoder, ``infinite_id.1.*`` the branch) with tailor
metadata; the paper released no weights to read.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tailor.core.components import load_image_encoder
from tailor.core.conditioning import StepExtras, StepState
from tailor.core.method import Method
from tailor.core.reference_bank import ReferenceBank, ReferenceRows, prefix_rows
from tailor.errors import ConfigError, InputError
from tailor.faces.id_adapter import FaceIDMethod
from tailor.faces.inputs import as_list, check_width, clip_pixels, reference_faces
from tailor.methods.infinite_id.config import InfiniteIDConfig
from tailor.methods.infinite_id.modules import IDEncoder, IDPairs, mixed_attention

STREAM_ID_DROP = 11  # random stream of the ID-drop draws (distinct from the trainer's and IP-Adapter's)
_ENCODERS: dict[tuple[str, str], Any] = {}  # (name, device) -> (CLIP vision tower, processor); frozen, shared


@dataclass
class _Stream:
    """The ID stream of one generation: its latents, its sampler copy and the rows of the last call."""

    latents: torch.Tensor
    scheduler: Any
    step: int
    timestep: Any = None
    rows: ReferenceRows | None = None


class InfiniteIDMethod(FaceIDMethod):
    """Attach with ``pipe.attach(method, weight=1.0, face=IMG)`` (an image, path, folder or list: faces average)."""

    name = "infinite_id"
    config_cls = InfiniteIDConfig

    def __init__(self, config: InfiniteIDConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.encoder = self.processor = None
        self.bank: ReferenceBank | None = None
        self._face: tuple | None = None  # (attachment inputs, face embedding (1, D), CLIP embedding (1, E))
        self._fallback: tuple | None = None  # a training item's reference, for the trainer's sample grids
        self._stream: _Stream | None = None
        self._seed = 0

    # ------------------------------------------------------------------ build / attach
    def projection(self, components) -> IDEncoder:
        c = self.config
        face = super().projection(components)  # sets embed_width (the face embedder's, or embed_dim)
        del face
        key = (str(c.image_encoder), str(components.device))
        if key not in _ENCODERS:
            _ENCODERS[key] = load_image_encoder(c.image_encoder, components.device)
        self.encoder, self.processor = _ENCODERS[key]
        clip_dim = int(self.encoder.config.projection_dim)
        return IDEncoder(self.embed_width, clip_dim, components.cross_attention_dim, c.num_tokens, c.clip_tokens,
                         c.resampler_depth, c.resampler_width, c.resampler_heads)  # fmt: skip

    def attach(self, components) -> None:
        super().attach(components)
        if self.config.mixed and self.bank is None:
            self.bank = ReferenceBank(components.unet, reader="call", style_fidelity=self.config.style_fidelity,
                                      read_fn=self._read)  # fmt: skip
            self.bank.attach()

    def detach(self, components) -> None:
        super().detach(components)
        if self.bank is not None:
            self.bank.detach()
        self.bank, self._face, self._stream = None, None, None

    def _read(self, attn, hidden_states, id_states, extra):
        return mixed_attention(attn, hidden_states, id_states, extra, self.config.adain_mean)

    def set_scale(self, scale: float) -> None:
        super().set_scale(scale)  # the branch: weight * id_scale at sampling, 1 in training
        if self.bank is not None:
            self.bank.scale = 1.0 if self.scale > 0 else 0.0  # every self-attention layer reads while active

    # ------------------------------------------------------------------ tokens
    def _clip(self, images: list) -> torch.Tensor:
        """CLIP image embeddings (N, E) of reference images (paths, PIL images, 3xHxW tensors in [-1, 1])."""
        p = next(self.encoder.parameters())
        px = clip_pixels(images, self.processor).to(p.device, p.dtype)
        with torch.no_grad():
            return self.encoder(px).image_embeds.float()

    def _tokens(self, face: torch.Tensor, clip: torch.Tensor | None = None) -> torch.Tensor:
        p = next(self.proj.parameters())
        if clip is None:
            clip = face.new_zeros(face.shape[0], self.proj.clip_dim)
        return self.proj(face.to(p), clip.to(p))

    def encode(self, cond, inputs: dict[str, Any]):
        if "pixel_values" in inputs:  # a training / validation batch
            return self._encode_batch(cond, inputs)
        face, clip = self._reference(inputs)
        with torch.no_grad():  # the tokens follow the current weights
            tok, utok = self._tokens(face, clip), self._tokens(torch.zeros_like(face), torch.zeros_like(clip))
        b = cond.batch_size
        rows = [utok.expand(b, -1, -1), tok.expand(b, -1, -1)] if cond.cfg else [tok.expand(b, -1, -1)]
        self.branch.tokens = torch.cat(rows)
        self.branch.regions = None
        if self.config.mixed:  # the text stream's own rows: the ID cross-attention at text_id_scale (gated)
            self.branch.regions = [(self.branch.tokens, self._gate)]
        self._stream = None
        return cond

    def _gate(self, name: str, hidden_states: torch.Tensor) -> torch.Tensor:
        """Per-row factor of the ID cross-attention: the text stream's rows get ``text_id_scale`` (the ID stream's
        rows, fused in front, get 1)."""
        rows = hidden_states.shape[0] - prefix_rows()
        return hidden_states.new_full((rows, 1, 1), float(self.config.text_id_scale))

    def _encode_batch(self, cond, inputs: dict[str, Any]):
        face = check_width(inputs["face_embedding"], self.embed_width, "the training batch")
        clip = self._clip(list(inputs["id_pixel_values"]))
        keep = inputs.get("id_keep")
        if keep is not None:  # id_drop: zero embeddings for the dropped samples
            k = torch.as_tensor(keep, dtype=face.dtype, device=face.device)[:, None]
            face, clip = face * k, clip * k.to(clip)
        self.branch.regions = None
        self.branch.tokens = self._tokens(face, clip)
        if self.config.text_off:  # identity-enhanced training: the text cross-attention off
            cond = dataclasses.replace(cond, encoder_hidden_states=torch.zeros_like(cond.encoder_hidden_states))
        return cond

    def _reference(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean face embedding (1, D) and mean CLIP embedding (1, E) of the reference faces, cached per
        attachment inputs (held, so a recycled dict address never matches)."""
        if self._face is None or self._face[0] is not inputs:
            source = inputs.get("face")
            if source is None and self._fallback is not None:  # the trainer's sample grid: a training reference
                face, image = self._fallback
                clip = self._clip([image])
            elif source is None:
                raise InputError("infinite_id needs a reference face; attach it with face=IMG "
                                 "(tailor generate --infinite-id MODEL --face IMG).")  # fmt: skip
            else:
                images = [x for x in as_list(source) if not _is_embedding(x)]
                if not images:
                    raise InputError("infinite_id reads the reference face images themselves (face embedding and "
                                     "CLIP features); pass image files, not ready embeddings.")  # fmt: skip
                c = self.config
                face = reference_faces(images, c.face_backend, self.embedder_name(inputs), self.embed_width)[0]
                face, clip = face.mean(0, keepdim=True), self._clip(images).mean(0, keepdim=True)
            self._face = (inputs, face, clip)
        return self._face[1], self._face[2]

    # ------------------------------------------------------------------ the two streams
    def step_kwargs(self, state: StepState) -> StepExtras | None:
        if state.training or not self.config.mixed or self.bank is None or self.scale <= 0:
            return None
        if state.scheduler is None:
            raise ConfigError("infinite_id's mixed attention runs inside Pipeline.generate (it needs the sampler).")
        cond, b = state.cond, state.cond.batch_size
        id_cfg = cond.cfg and self.config.id_guidance > 1.0
        st = self._stream
        if st is None or st.step != state.step - 1 or st.rows is None or st.rows.prediction is None:
            # the first step the streams interact: the ID stream starts from the text stream's latents
            sched = copy.deepcopy(state.scheduler)
            text_in = state.latents[b:] if cond.cfg else state.latents
            factor = sched.scale_model_input(torch.ones_like(text_in[:1]), state.timestep)
            st = _Stream(text_in / factor, sched, state.step)
        else:  # one step of the ID stream with the previous call's prediction
            eps = st.rows.prediction
            if id_cfg:
                u, c = eps.chunk(2)
                eps = u + self.config.id_guidance * (c - u)
            st.latents = st.scheduler.step(eps, st.timestep, st.latents, **self._step_kw(st.scheduler, state.step),
                                           return_dict=False)[0]  # fmt: skip
            st.step = state.step
        st.timestep = state.timestep
        x = st.scheduler.scale_model_input(st.latents, state.timestep)
        hidden = cond.encoder_hidden_states
        sampling = torch.arange(hidden.shape[0])
        if id_cfg:  # [ID uncond, ID cond]: they stand for the sampling rows [uncond, cond] (their ID tokens)
            latents, rows = torch.cat([x, x]), sampling
        else:
            latents, rows = x, sampling[b:] if cond.cfg else sampling
        text_off = torch.zeros_like(hidden[: rows.shape[0]])
        added = cond.added_cond_kwargs
        if added:
            added = {k: v[rows.to(v.device)] for k, v in added.items()}
        self.bank.uncond_rows = b if cond.cfg else 0
        st.rows = ReferenceRows(latents, text_off, added, rows, [self.bank], 1)
        self._stream = st
        return StepExtras(reference_rows=st.rows)

    def _step_kw(self, scheduler, step: int) -> dict[str, Any]:
        if "generator" in inspect.signature(scheduler.step).parameters:
            return {"generator": torch.Generator("cpu").manual_seed(self._seed * 1_000_003 + step)}
        return {}

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        self._seed = int(config.seed)
        data = IDPairs(dataset, self.embedder_name())
        if len(data):
            item = data[0]
            self._fallback = (item["face_embedding"][None], item["id_pixel_values"])
        return data

    def expand_batch(self, batch, keys, positions):
        """``id_keep``: one draw per sample from its trainer position (a resumed run draws the same)."""
        if torch.is_grad_enabled() and self.config.id_drop > 0:
            from tailor.core.training.noise import generator

            draws = [float(torch.rand((), generator=generator(self._seed, STREAM_ID_DROP, p))) for p in positions]
            batch = {**batch, "id_keep": [u >= self.config.id_drop for u in draws]}
        return batch, keys, positions

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        """``infinite_id.0.*`` (the ID encoder) and ``infinite_id.1.*`` (``to_k_ip`` / ``to_v_ip``)."""
        return Method.state_dict(self) if self._built else dict(self._pending_state or {})

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        Method.load_state_dict(self, state)

    def metadata(self) -> dict:
        return {**super().metadata(), "clip_dim": str(self.proj.clip_dim if self._built else "")}


def _is_embedding(item: Any) -> bool:
    return isinstance(item, torch.Tensor) or (
        isinstance(item, np.ndarray) and item.ndim <= 2 and item.dtype != np.uint8
    )
