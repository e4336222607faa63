"""The base of the face-ID adapters (InstantID, Wang et al. 2024; PuLID, Guo et al. 2024): a face embedding from the
conditioning face embedder -> a Perceiver Resampler -> ID tokens in decoupled cross-attention.

:class:`FaceIDConfig` holds the options both share (face embedder and backend, embedding width, tokens, Resampler
depth, width and heads); :class:`FaceIDMethod` (an :class:`~tailor.core.image_prompt.ImagePromptMethod`) builds the
Resampler over one face embedding and turns embeddings into the branch's tokens: a training batch's
``face_embedding`` rows, or at sampling one reference embedding for the cond half and, as the official pipelines do,
a zero embedding for the uncond half. Each method keeps its own extras (InstantID's IdentityNet, PuLID's losses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tailor.core.config import option
from tailor.core.image_prompt import ImagePromptConfig, ImagePromptMethod
from tailor.core.resampler import check_options, make_projection
from tailor.core.surface import Input, InputOption
from tailor.faces.analysis import BACKENDS
from tailor.faces.embedders import FaceEmbedder, check_embedder_width, face_embedder, is_world
from tailor.faces.inputs import check_width

#: the reference faces every face-ID method reads at inference: ``--face IMG`` (repeatable; several average) or
#: ``--<method> PATH=FACE``; a ``labels.json`` beside a world render gives its exact keypoints
FACE_INPUT = Input(
    "face",
    "paths",
    flag="--face",
    help="Reference face image for the identity flags (--instantid, --pulid; repeatable: faces average).",
    options=(
        InputOption(
            "face_embedder",
            "--face-embedder",
            help="Face embedder for the identity flags' reference faces: a world face-model file or an ArcFace-style "
            ".onnx model (e.g. antelopev2 glintr100.onnx; needs the onnx extra); default: the model's own.",
        ),
    ),
)


@dataclass
class FaceIDConfig(ImagePromptConfig):
    """Options of a face-ID adapter (subclasses add their scales and losses)."""

    face_embedder: str = option(
        "world",
        "face embedder: 'world' (shipped), a world face-model file or an ArcFace-style .onnx model "
        "(e.g. antelopev2 glintr100.onnx, 512-d; needs the onnx extra)",
    )
    face_backend: str = option("auto", "face analysis of reference images", choices=BACKENDS)
    embed_dim: int = option(0, "face-embedding width the adapter reads (0 = the face embedder's; InsightFace 512)")
    num_tokens: int = option(16, "ID tokens (the Resampler's learned queries)")
    resampler_depth: int = option(4, "Resampler layers (paper 4; the official file loads in diffusers only at 4)")
    resampler_width: int = option(0, "Resampler width (0 = the base's cross-attention width; official SDXL 1280)")
    resampler_heads: int = option(0, "Resampler attention heads of 64 (0 = resampler width / 64; official SDXL 20)")

    def validate(self) -> None:
        c = self.check
        c(self.embed_dim >= 0, f"embed_dim must be 0 (the embedder's) or positive; got {self.embed_dim}.")
        c(self.num_tokens >= 1, f"num_tokens must be at least 1; got {self.num_tokens}.")
        check_options(self)  # resampler width, heads, depth
        super().validate()  # the scales


class FaceIDMethod(ImagePromptMethod):
    """ID tokens from face embeddings; subclasses read the reference faces (``encode``) and add their extras."""

    def __init__(self, config: FaceIDConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.embed_width = 0

    def embedder_name(self, inputs: dict[str, Any] | None = None) -> str | None:
        """The face embedder's file (an attachment's ``face_embedder`` input wins over the config), None for the
        shipped world one."""
        name = (inputs or {}).get("face_embedder") or self.config.face_embedder
        return None if is_world(name) else str(name)

    def face_embedder(self, inputs: dict[str, Any] | None = None) -> FaceEmbedder:
        """The face embedder, checked against the width the adapter reads (one sentence when they differ)."""
        model = face_embedder(self.embedder_name(inputs))
        check_embedder_width(model, self.embed_width, f"this {self.name} model")
        return model

    def projection(self, components) -> nn.Module:
        c = self.config
        self.embed_width = int(c.embed_dim) or face_embedder(self.embedder_name()).dim
        cad = components.cross_attention_dim
        return make_projection(True, self.embed_width, cad, c.num_tokens, c.resampler_depth, c.resampler_width,
                               c.resampler_heads)  # fmt: skip

    def _tokens(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, D) face embeddings -> (B, T, cross-attention width) ID tokens (a sequence of one embedding each)."""
        p = next(self.proj.parameters())
        return self.proj(emb.to(device=p.device, dtype=p.dtype)[:, None])

    def encode_batch(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Training / validation: the batch's ``face_embedding`` rows become the tokens; returns the embeddings."""
        emb = check_width(inputs["face_embedding"], self.embed_width, "the training batch")
        self.branch.tokens = self._tokens(emb)
        return emb

    def encode_reference(self, cond, emb: torch.Tensor) -> None:
        """Sampling: one (1, D) reference embedding for the cond rows, a zero embedding for the uncond rows."""
        with torch.no_grad():  # the tokens follow the current weights
            tok, utok = self._tokens(emb), self._tokens(torch.zeros_like(emb))
        b = cond.batch_size
        rows = [utok.expand(b, -1, -1), tok.expand(b, -1, -1)] if cond.cfg else [tok.expand(b, -1, -1)]
        self.branch.tokens = torch.cat(rows)

    def metadata(self) -> dict:
        return {**super().metadata(), "embed_dim": str(self.embed_width or self.config.embed_dim)}
