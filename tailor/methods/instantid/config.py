"""Options of InstantID (Wang et al. 2024, *InstantID: Zero-shot Identity-Preserving Generation in Seconds*): the
face embedder, the ID tokens, and the two scales (ID adapter, IdentityNet) with the IdentityNet's start/end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import option
from tailor.faces.id_adapter import FaceIDConfig


@dataclass
class InstantIDConfig(FaceIDConfig):
    """Paper defaults: 16 ID tokens from a Perceiver Resampler over the face embedding, ip scale and controlnet
    scale ~0.8 each; trained with eps-MSE, UNet frozen (AdamW 1e-4 here, the IP-Adapter recipe it builds on)."""

    paper: ClassVar[str] = "Wang et al. 2024, InstantID (arXiv:2401.07519)"
    scale_fields: ClassVar[tuple[str, ...]] = ("ip_scale", "controlnet_scale")

    # face_embedder, face_backend, embed_dim, num_tokens (16), resampler_depth: FaceIDConfig's
    ip_scale: float = option(0.8, "ID-adapter scale (times the attachment weight)")
    controlnet_scale: float = option(0.8, "IdentityNet residual scale (times the attachment weight)")
    controlnet_start: float = option(0.0, "fraction of the schedule where IdentityNet starts")
    controlnet_end: float = option(1.0, "fraction of the schedule where IdentityNet stops")
    train_reference: str = option(
        "self",
        "training reference of the ID embedding: self (the target image's own face, the paper) or photo (another "
        "photo render of a world face's identity: other pose, light and background)",
        choices=("self", "photo"),
    )

    def validate(self) -> None:
        super().validate()  # the shared options; ip_scale and controlnet_scale in [0, MAX_SCALE]
        self.check(0.0 <= self.controlnet_start < self.controlnet_end <= 1.0,
          f"controlnet_start/end must satisfy 0 <= start < end <= 1; got {self.controlnet_start}/"
          f"{self.controlnet_end}.")  # fmt: skip
