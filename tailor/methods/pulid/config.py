"""Options of PuLID (Guo et al. 2024, *PuLID: Pure and Lightning ID Customization via Contrastive Alignment*): the
face embedder, the ID tokens and scale, and the weights of the alignment and ID losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import option
from tailor.faces.id_adapter import FaceIDConfig


@dataclass
class PuLIDConfig(FaceIDConfig):
    """Paper weights: semantic alignment 0.6, layout alignment 0.1, ID loss 1.0 on an image generated in a few fast
    steps (the paper: 4 Lightning steps). ID tokens: 32 [? the release's IDFormer; here a Resampler over the face
    embedding]."""

    paper: ClassVar[str] = "Guo et al. 2024, PuLID (arXiv:2404.16022)"
    scale_fields: ClassVar[tuple[str, ...]] = ("id_scale",)

    # face_embedder, face_backend, embed_dim, resampler_depth: FaceIDConfig's (num_tokens too, another default here)
    num_tokens: int = option(32, "ID tokens (the Resampler's learned queries)")
    id_scale: float = option(1.0, "ID scale (times the attachment weight)")
    align_semantic: float = option(0.6, "weight of the semantic alignment loss")
    align_layout: float = option(0.1, "weight of the layout alignment loss")
    id_loss: float = option(1.0, "weight of the ID loss (1 - cos of face embeddings) on the fast-sampled image")
    release: str = option(
        "",
        "the official release's ID encoder ('v1' MLP, 'v1.1' IDFormer; set by tailor.load of a "
        "release file) or '' (tailor's Resampler)",
    )
    num_zero: int = option(0, "zero tokens appended to the ID tokens (the release's NUM_ZERO; its app: 8 or 16)")
    id_steps: int = option(4, "sampling steps of the fast generation the ID loss scores (from pure noise)")

    def validate(self) -> None:
        c = self.check
        super().validate()  # the shared options; id_scale in [0, MAX_SCALE]
        for name in ("align_semantic", "align_layout", "id_loss"):
            c(getattr(self, name) >= 0, f"{name} must be 0 or more; got {getattr(self, name)}.")
        c(self.release in ("", "v1", "v1.1"), f"release must be '', 'v1' or 'v1.1'; got {self.release!r}.")
        c(self.num_zero >= 0, f"num_zero must be 0 or more; got {self.num_zero}.")
        c(1 <= self.id_steps <= 50, f"id_steps must lie in [1, 50]; got {self.id_steps}.")
