"""InstantID (Wang et al. 2024): a face-recognition embedding -> Perceiver Resampler -> 16 ID tokens in decoupled
cross-attention (the IP-Adapter machinery of :mod:`tailor.core.attention`), plus IdentityNet: a ControlNet whose
condition is the 5 face keypoints drawn in InstantID's style and whose cross-attention context is the ID tokens
instead of the text. Trained: Resampler, ``to_k_ip`` / ``to_v_ip`` and IdentityNet, eps-MSE, UNet frozen.

IdentityNet is the registered ``controlnet`` method, composed (DESIGN.md #4): this method hands it a step state whose
``encoder_hidden_states`` are the ID tokens and whose condition is the keypoint image. Scales: the ID adapter runs at
``weight * ip_scale``, IdentityNet's residuals at ``weight * controlnet_scale`` inside ``controlnet_start/end``.

``encode(cond, inputs)``: at sampling ``inputs["face"]`` (image, path, folder or list; several faces average their
embeddings, as the paper does; or ready embeddings) gives the ID; the uncond half gets the Resampler's output for a
zero embedding (the official pipeline's). Keypoints come from ``inputs["keypoints"]`` ((5, 2) pixels on an image of
``inputs["keypoints_size"]`` = (w, h)), else from the first face image, scaled to the output size. In training the
data wrapper adds ``face_embedding`` and ``face_keypoints`` to every item (:class:`tailor.faces.inputs.FaceDataset`).

Files: ``instantid.safetensors`` (tailor metadata; keys ``image_proj.*``, ``ip_adapter.*`` in the official
IP-Adapter layout + ``identitynet.<diffusers ControlNet key>``) and, as the official release ships them,
``ip-adapter.safetensors`` (diffusers' ``load_ip_adapter`` reads it as an IP-Adapter-Plus) and ``ControlNetModel/``
(a diffusers ControlNet).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tailor.core.attention import attach_branch, is_attached
from tailor.core.conditioning import StepExtras, StepState
from tailor.core.method import get_spec, load_module_state
from tailor.errors import InputError
from tailor.faces.id_adapter import FaceIDMethod
from tailor.faces.inputs import FaceDataset, reference_faces
from tailor.methods.instantid import formats
from tailor.methods.instantid.config import InstantIDConfig
from tailor.methods.instantid.modules import batch_condition, keypoint_condition


class InstantIDMethod(FaceIDMethod):
    """Attach with ``pipe.attach(method, weight=1.0, face=IMG)`` (optionally ``keypoints=..., keypoints_size=...``)."""

    name = "instantid"
    config_cls = InstantIDConfig

    def __init__(self, config: InstantIDConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.identitynet = get_spec("controlnet").method(condition="keypoints", conditioning_scale=1.0)
        self._face: tuple | None = None  # (attachment inputs, embedding (1, D), keypoints, size)
        self._condition: tuple | None = None  # (key, keypoint image at the output size)
        self._fallback: tuple | None = None  # a training item's (embedding, keypoints, size) for sample grids

    @classmethod
    def file_layout(cls):
        """The official IP-Adapter layout (the ``ip_adapter`` method's, through the registry)."""
        return get_spec("ip_adapter").method.file_layout()

    def modules(self) -> list[nn.Module]:
        return [*super().modules(), *self.identitynet.modules()] if self._built else []

    # ------------------------------------------------------------------ attach / detach
    def build(self, components) -> None:
        super().build(components)
        self.identitynet.patch(components)

    def attach(self, components) -> None:
        if self.identitynet.components is None:
            self.identitynet.patch(components)
        if not is_attached(components.unet, self.branch):
            attach_branch(components.unet, self.branch)

    def detach(self, components) -> None:
        super().detach(components)
        self.identitynet.unpatch()
        self._face = self._condition = None

    # ------------------------------------------------------------------ encode
    def encode(self, cond, inputs: dict[str, Any]):
        if "pixel_values" in inputs:  # training / validation batch
            self.encode_batch(inputs)
        else:
            self.encode_reference(cond, self._reference(inputs))
        return cond

    def _reference(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The (1, D) reference embedding; the face analysis (with keypoints and size) is cached per attachment
        inputs (held, so the cache never matches a new dict at a recycled address)."""
        if self._face is None or self._face[0] is not inputs:
            source = inputs.get("face", inputs.get("face_embedding"))
            if source is None and self._fallback is not None:
                emb, kps, size = self._fallback
            elif source is None:
                raise InputError(
                    "instantid needs a reference face; attach it with face=IMG (tailor generate --face IMG)."
                )
            else:
                c = self.config
                emb, kps, size = reference_faces(source, c.face_backend, self.embedder_name(inputs), self.embed_width)
                emb = emb.mean(0, keepdim=True)  # several references: the mean embedding (the paper)
            if inputs.get("keypoints") is not None:
                kps, size = inputs["keypoints"], inputs.get("keypoints_size")
                if size is None:
                    raise InputError("keypoints need keypoints_size=(width, height) of the image they were found on.")
            self._face = (inputs, emb, kps, size)
        return self._face[1]

    # ------------------------------------------------------------------ the step
    def step_kwargs(self, state: StepState) -> StepExtras | None:
        if self.branch.tokens is None:
            return None
        c, f = self.config, self.components.vae_scale_factor
        h, w = state.latents.shape[-2] * f, state.latents.shape[-1] * f
        if state.training:
            image = batch_condition(state.inputs["face_keypoints"], h, w).to(state.latents.device)
        else:
            if (
                state.step / state.num_steps < c.controlnet_start
                or (state.step + 1) / state.num_steps > c.controlnet_end
            ):
                return None
            _, _, kps, size = self._face
            if kps is None:
                return None  # embeddings without keypoints: the ID adapter alone
            key = (np.asarray(kps, np.float32).tobytes(), tuple(size), h, w)
            if self._condition is None or self._condition[0] != key:
                pts = torch.as_tensor(kps, dtype=torch.float32) * torch.tensor([w / size[0], h / size[1]])
                self._condition = (key, keypoint_condition(pts.numpy(), (w, h)).to(state.latents.device))
            image = self._condition[1]
        ctx = dataclasses.replace(state.cond, encoder_hidden_states=self.branch.tokens)
        extras = self.identitynet.step_kwargs(
            dataclasses.replace(state, cond=ctx, inputs={"condition": image}, training=True)
        )
        return extras if state.training else extras.scaled(float(c.controlnet_scale))

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        data = FaceDataset(dataset, self.embedder_name(), reference=self.config.train_reference)
        if len(data):
            item = data[0]
            size = (item["pixel_values"].shape[-1], item["pixel_values"].shape[-2])
            self._fallback = (item["face_embedding"][None], item["face_keypoints"].numpy(), size)
        return data

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        out = super().state_dict()
        if self._built:
            out.update({f"identitynet.{k}": v for k, v in self.identitynet.wrapped_model.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        proj, ip, net = formats.split(state)
        what, layout, layers = "instantid", self.file_layout(), len(self.branch.layer_names)
        load_module_state(self.proj, layout.proj_from_official(proj, plus=True), what)
        formats.check_layers(ip, layers)
        load_module_state(self.branch, layout.branch_from_official(ip, layers), what)
        if net:  # an official folder's IdentityNet arrives with its own (diffusers) weights
            self.identitynet.load_state_dict(net)

    def save(self, out_dir: str | Path) -> Path:
        """``instantid.safetensors`` plus the official pair: ``ip-adapter.safetensors`` and ``ControlNetModel/``."""
        path = super().save(out_dir)
        if self._built:
            formats.write_official(Path(out_dir), self.state_dict(), self.identitynet.wrapped_model)
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> InstantIDMethod:
        return formats.load(cls, Path(path))

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        return formats.sniff(Path(path))
