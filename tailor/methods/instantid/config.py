"""Options of InstantID (Wang et al. 2024, *InstantID: Zero-shot Identity-Preserving Generation in Seconds*): the
face embedder, the ID tokens, and the two scales (ID adapter, IdentityNet) with the IdentityNet's start/end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import option
from tailor.core.image_prompt import ImagePromptConfig
from tailor.faces.analysis import BACKENDS


@dataclass
class InstantIDConfig(ImagePromptConfig):
    """Paper defaults: 16 ID tokens from a Perceiver Resampler over the face embedding, ip scale and controlnet
    scale ~0.8 each; trained with eps-MSE, UNet frozen (AdamW 1e-4 here, the IP-Adapter recipe it builds on)."""

    paper: ClassVar[str] = "Wang et al. 2024, InstantID (arXiv:2401.07519)"
    scale_fields: ClassVar[tuple[str, ...]] = ("ip_scale", "controlnet_scale")

    face_embedder: str = option("world", "conditioning face embedder: 'world' (shipped) or a face-model file")
    face_backend: str = option("auto", "face analysis of reference images", choices=BACKENDS)
    embed_dim: int = option(0, "face-embedding width the adapter reads (0 = the face embedder's; InsightFace 512)")
    num_tokens: int = option(16, "ID tokens (the Resampler's learned queries)")
    resampler_depth: int = option(4, "Resampler layers (paper 4; the official file loads in diffusers only at 4)")
    ip_scale: float = option(0.8, "ID-adapter scale (times the attachment weight)")
    controlnet_scale: float = option(0.8, "IdentityNet residual scale (times the attachment weight)")
    controlnet_start: float = option(0.0, "fraction of the schedule where IdentityNet starts")
    controlnet_end: float = option(1.0, "fraction of the schedule where IdentityNet stops")

    def validate(self) -> None:
        c = self.check
        c(self.embed_dim >= 0, f"embed_dim must be 0 (the embedder's) or positive; got {self.embed_dim}.")
        c(self.num_tokens >= 1, f"num_tokens must be at least 1; got {self.num_tokens}.")
        c(self.resampler_depth >= 1, f"resampler_depth must be at least 1; got {self.resampler_depth}.")
        super().validate()  # ip_scale and controlnet_scale in [0, MAX_SCALE]
        c(0.0 <= self.controlnet_start < self.controlnet_end <= 1.0,
          f"controlnet_start/end must satisfy 0 <= start < end <= 1; got {self.controlnet_start}/"
          f"{self.controlnet_end}.")  # fmt: skip
