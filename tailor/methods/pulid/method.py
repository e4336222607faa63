"""PuLID (Guo et al. 2024): ID tokens (a Perceiver Resampler over the face embedding) in decoupled cross-attention
(:mod:`tailor.core.attention`), trained with the diffusion loss plus

(a) contrastive alignment: after the trainer's UNet call with the ID, the same noisy latents and prompt go through the
    UNet with the ID switched off; the ID path's cross-attention queries are pulled to the text-only path's
    (semantic ``softmax(K Q^T) Q`` and layout ``Q`` terms, :mod:`tailor.methods.pulid.modules`), so the ID does not
    disturb what the text controls;
(b) an ID loss: an image generated from pure noise in ``id_steps`` DDIM steps with the ID, decoded and scored by the
    conditioning face embedder, ``1 - cos`` to the reference's embedding, gradients through the chain.

Weights: semantic 0.6, layout 0.1, ID 1.0 (the paper). Only :meth:`loss` is overridden; the training loop is the
one trainer's. Sampling: ``pipe.attach(method, face=IMG)`` (image, path, folder, list -> mean embedding, or ready
embeddings); the uncond half gets the Resampler's output for a zero embedding.

File: ``pulid.safetensors`` with ``image_proj.*`` / ``ip_adapter.*`` in the IP-Adapter layout (tailor metadata).
The official release's files (``pulid_v1.bin``, ``pulid_v1.1.safetensors``: ``id_adapter.*`` +
``id_adapter_attn_layers.*``) load through ``tailor.load`` with ``release`` set; their ID encoders read the official
antelopev2 + EVA-CLIP features (``id_features``), :mod:`tailor.methods.pulid.release`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tailor.core.io import PICKLE_SUFFIXES, load_tensors, read_metadata, safe_torch_load
from tailor.core.latents import vae_decode
from tailor.core.method import ARTIFACT_FORMAT, get_spec, load_module_state
from tailor.core.pipeline import call_unet
from tailor.core.samplers import make_scheduler
from tailor.errors import ConfigError, FormatError, InputError
from tailor.faces.id_adapter import FaceIDMethod
from tailor.faces.inputs import FaceDataset, reference_faces
from tailor.methods.pulid import release
from tailor.methods.pulid.config import PuLIDConfig
from tailor.methods.pulid.modules import Recorder, id_cosine_loss, semantic_and_layout


class PuLIDMethod(FaceIDMethod):
    """Attach with ``pipe.attach(method, weight=1.0, face=IMG)``."""

    name = "pulid"
    config_cls = PuLIDConfig

    def __init__(self, config: PuLIDConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.recorder: Recorder | None = None
        self._face: tuple | None = None  # (attachment inputs, mean face embedding (1, D))
        self._reference: torch.Tensor | None = None  # the training batch's face embeddings
        self._fallback: torch.Tensor | None = None
        self._seed = 0

    @classmethod
    def file_layout(cls):
        """The official IP-Adapter layout (the ``ip_adapter`` method's, through the registry)."""
        return get_spec("ip_adapter").method.file_layout()

    # ------------------------------------------------------------------ the release's ID encoders
    def projection(self, components):
        if not self.config.release:
            return super().projection(components)
        state = self._pending_state
        if not state or release.version(state) != self.config.release:
            raise ConfigError(f"release {self.config.release!r} builds the official ID encoder from a PuLID release "
                              f"file; load one with tailor.load(path).")  # fmt: skip
        encoder = release.build_encoder(state, self.config.release)
        if encoder.context_dim != components.cross_attention_dim:
            raise FormatError(f"the PuLID release file makes {encoder.context_dim}-wide ID tokens but this base's "
                              f"cross-attention is {components.cross_attention_dim} wide; use SDXL.")  # fmt: skip
        self.embed_width = encoder.id_dim
        return encoder

    def _id_tokens(self, features) -> tuple[torch.Tensor, torch.Tensor]:
        """(ID tokens, the unconditional ones from all-zero features, as the release's pipelines make them)."""
        cond, hidden = release.check_features(features, self.proj)
        p = next(self.proj.parameters())
        cond, hidden = cond.to(p), [h.to(p) for h in hidden]
        with torch.no_grad():
            tok = self.proj(cond, hidden)
            utok = self.proj(torch.zeros_like(cond), [torch.zeros_like(h) for h in hidden])
        return self._pad(tok), self._pad(utok)

    def _pad(self, tokens: torch.Tensor) -> torch.Tensor:
        """``num_zero`` zero tokens after the ID tokens (the release's NUM_ZERO; keys and values of zeros)."""
        n = self.config.num_zero
        return torch.cat([tokens, tokens.new_zeros(tokens.shape[0], n, tokens.shape[2])], dim=1) if n else tokens

    def _tokens(self, emb: torch.Tensor) -> torch.Tensor:
        return self._pad(super()._tokens(emb))

    # ------------------------------------------------------------------ attach / detach
    def detach(self, components) -> None:
        super().detach(components)
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None
        self._face = None

    # ------------------------------------------------------------------ encode
    def encode(self, cond, inputs: dict[str, Any]):
        if self.config.release:
            if "pixel_values" in inputs:
                raise ConfigError("a PuLID release model is read for sampling; train tailor's own PuLID instead.")
            if self._face is None or self._face[0] is not inputs:
                self._face = (inputs, self._id_tokens(inputs.get("id_features")))
            tok, utok = self._face[1]
            b = cond.batch_size
            rows = [utok.expand(b, -1, -1), tok.expand(b, -1, -1)] if cond.cfg else [tok.expand(b, -1, -1)]
            self.branch.tokens = torch.cat(rows)
            return cond
        if "pixel_values" in inputs:
            self._reference = self.encode_batch(inputs)
            if torch.is_grad_enabled():  # a training step (not validation): record the ID path's features
                if self.recorder is None:
                    self.recorder = Recorder(self.components.unet, self.branch.layer_names)
                self.recorder.start()
            return cond
        if self._face is None or self._face[0] is not inputs:  # the face analysis, cached per attachment inputs
            source = inputs.get("face", inputs.get("face_embedding"))
            if source is None and self._fallback is None:
                raise InputError("pulid needs a reference face; attach it with face=IMG (tailor generate --face IMG).")
            if source is None:
                emb = self._fallback
            else:
                c = self.config
                emb = reference_faces(source, c.face_backend, self.embedder_name(inputs), self.embed_width)[0]
            self._face = (inputs, emb.mean(0, keepdim=True))
        emb = self._face[1]
        self.encode_reference(cond, emb)
        return cond

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        self._seed = int(config.seed)
        if self.config.id_loss > 0 and not self.face_embedder().differentiable:
            raise ConfigError(
                f"pulid's ID loss back-propagates through the face embedder, which {self.embedder_name()} (ONNX) "
                "cannot; train with --id-loss 0 or a world (.safetensors) face embedder."
            )
        data = FaceDataset(dataset, self.embedder_name(), keypoints=False)
        if len(data):
            self._fallback = data[0]["face_embedding"][None]
        return data

    def loss(self, pred, target, state, weights):
        """Diffusion MSE + ``align_semantic`` * semantic + ``align_layout`` * layout + ``id_loss`` * ID loss."""
        total, logs = super().loss(pred, target, state, weights)
        rec, c = self.recorder, self.config
        if not state.training or rec is None or not rec.on:
            return total, logs
        q_id, k_id = rec.take()
        unet = self.components.unet
        if c.align_semantic > 0 or c.align_layout > 0:
            scale, self.branch.scale = self.branch.scale, 0.0  # the same call without the ID
            rec.start()
            with torch.no_grad():
                call_unet(unet, state.latents, state.timestep, state.cond, {})
            q_t, k_t = rec.take()
            self.branch.scale = scale
            heads = [unet.get_submodule(n.removesuffix(".processor")).heads for n in self.branch.layer_names]
            sem, lay = semantic_and_layout(q_id, k_id, q_t, k_t, heads)
            total = total + c.align_semantic * sem + c.align_layout * lay
            logs.update(align_semantic=float(sem.detach()), align_layout=float(lay.detach()))
        if c.id_loss > 0:
            idl = id_cosine_loss(self._face_of(self._fast_sample(state)), self._reference)
            total = total + c.id_loss * idl
            logs["id_loss"] = float(idl.detach())
        return total, logs

    def _fast_sample(self, state) -> torch.Tensor:
        """``id_steps`` DDIM steps from pure noise (seeded by run seed and step) with the ID; images in [0, 1]."""
        comps = self.components
        sched = make_scheduler("ddim", comps.scheduler)
        sched.set_timesteps(self.config.id_steps, device=state.latents.device)
        g = torch.Generator().manual_seed(self._seed * 1_000_003 + int(state.step))
        x = torch.randn(state.latents.shape, generator=g).to(state.latents) * sched.init_noise_sigma
        for t in sched.timesteps:
            eps = call_unet(comps.unet, sched.scale_model_input(x, t), t, state.cond, {})
            x = sched.step(eps, t, x, return_dict=False)[0]
        return (vae_decode(comps.vae, x) / 2 + 0.5).clamp(0, 1)

    def _face_of(self, images: torch.Tensor) -> torch.Tensor:
        return self.face_embedder().embed(images.float())

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self.config.release or not self._built:
            return super().state_dict()
        out = {f"{release.ENCODER}{k}": v for k, v in self.proj.state_dict().items()}
        out.update(release.branch_to_release(self.branch, self._indices()))
        return out

    def _indices(self) -> list[int]:
        return release.processor_indices(self.components.unet, self.branch.layer_names)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        if self.config.release:
            if release.version(state) != self.config.release:
                raise FormatError(f"these weights are not a PuLID {self.config.release} release file.")
            load_module_state(self.proj, release.encoder_state(state), "pulid id_adapter")
            load_module_state(self.branch, release.branch_from_release(state, self._indices()), "pulid")
            return
        layout = self.file_layout()
        proj, ip = layout.split(state)
        n = len(self.branch.layer_names)
        if sum(k.endswith(".to_k_ip.weight") for k in ip) != n:
            raise FormatError(f"the PuLID file does not have this base's {n} cross-attention layers; use one trained "
                              f"for this base.")  # fmt: skip
        load_module_state(self.proj, layout.proj_from_official(proj, plus=True), "pulid")
        load_module_state(self.branch, layout.branch_from_official(ip, n), "pulid")

    # ------------------------------------------------------------------ files
    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        """Claim the release's files (``id_adapter.*`` + ``id_adapter_attn_layers.*``)."""
        path = Path(path)
        try:
            if path.suffix == ".safetensors":  # the header's key names only
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as f:
                    return release.version(dict.fromkeys(f.keys())) is not None
            return path.suffix in PICKLE_SUFFIXES and release.version(_read(path)) is not None
        except Exception:  # unreadable: not ours to claim; tailor.load reports it
            return False

    @classmethod
    def from_file(cls, path: str | Path) -> PuLIDMethod:
        """A tailor ``pulid.safetensors``, or a release file (``release`` set from its keys)."""
        path = Path(path)
        meta = read_metadata(path) if path.suffix == ".safetensors" else {}
        if meta.get("format") == ARTIFACT_FORMAT:
            return super().from_file(path)  # type: ignore[return-value]
        state = _read(path)
        which = release.version(state)
        if which is None:
            raise FormatError(f"{path} is neither a tailor PuLID file nor a PuLID release file (id_adapter.* and "
                              f"id_adapter_attn_layers.* keys).")  # fmt: skip
        method = cls(cls.config_cls(release=which))
        method.load_state_dict(state)
        return method


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix in PICKLE_SUFFIXES:
        data = safe_torch_load(path)
        if not isinstance(data, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items()):
            raise FormatError(f"{path} is not a PuLID state dict (a flat mapping of tensors).")
        return data
    return load_tensors(path)
