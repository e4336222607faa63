"""Options of Infinite-ID (Wu et al. 2024, *Infinite-ID: Identity-preserved Personalization via ID-semantics Decoupling
Paradigm*, arXiv:2403.11781; no code released): the ID tokens (face embedding + CLIP image embedding), the
identity-enhanced training switch and the inference-time feature interaction (mixed attention, AdaIN-mean)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import option
from tailor.faces.id_adapter import FaceIDConfig


@dataclass
class InfiniteIDConfig(FaceIDConfig):
    """The paper: face-recognition + CLIP image embeddings -> ID tokens in an added image cross-attention, trained with
    the text cross-attention off; at inference an ID stream (image cross-attention only) and a text stream (text
    cross-attention only) share self-attention keys / values, the text stream's queries / keys taking the ID stream's
    mean (AdaIN-mean). [? token counts and where AdaIN-mean applies: the paper's text, no code to read.]"""

    paper: ClassVar[str] = "Wu et al. 2024, Infinite-ID (arXiv:2403.11781)"
    scale_fields: ClassVar[tuple[str, ...]] = ("id_scale",)

    # face_embedder, face_backend, embed_dim, resampler_*: FaceIDConfig's; num_tokens: the face tokens
    num_tokens: int = option(4, "ID tokens from the face embedding (the Resampler's learned queries)")
    image_encoder: str = option("world", "CLIP image encoder of the reference faces: world, tiny or a folder")
    clip_tokens: int = option(4, "ID tokens from the CLIP image embedding (IP-Adapter's linear + LayerNorm)")
    id_scale: float = option(1.0, "scale of the image cross-attention in the ID stream (times the attachment weight)")
    text_off: bool = option(True, "identity-enhanced training: the text cross-attention is switched off (the paper)")
    id_drop: float = option(0.05, "training: share of samples whose ID tokens are dropped (zero embeddings), so the "
                            "ID stream has an unconditional prediction to guide with")  # fmt: skip
    mixed: bool = option(True, "inference: an ID stream beside the text stream sharing self-attention keys / values "
                         "(mixed attention); off: the ID tokens go into the text stream's cross-attention directly "
                         "(IP-Adapter style)")  # fmt: skip
    adain_mean: bool = option(True, "inference: AdaIN-mean, the text stream's self-attention queries and keys take "
                              "the ID stream's mean (x - mu(x) + mu(y))")  # fmt: skip
    id_guidance: float = option(5.0, "guidance of the ID stream against zero ID tokens (1: none, one row less per "
                                "image)")  # fmt: skip
    text_id_scale: float = option(0.0, "scale of the ID cross-attention in the text stream's own rows (0: the paper, "
                                  "the ID reaches them through mixed attention only)")  # fmt: skip
    style_fidelity: float = option(0.0, "how much the text stream's unconditional rows keep their own self-attention "
                                   "(reference-only's rule; 0: they read the ID stream too)")  # fmt: skip

    def validate(self) -> None:
        c = self.check
        super().validate()  # the face-ID options; id_scale in [0, MAX_SCALE]
        c(self.clip_tokens >= 1, f"clip_tokens must be at least 1; got {self.clip_tokens}.")
        c(0.0 <= self.id_drop < 1.0, f"id_drop must lie in [0, 1); got {self.id_drop}.")
        c(1.0 <= self.id_guidance <= 20.0, f"id_guidance must lie in [1, 20]; got {self.id_guidance}.")
        c(0.0 <= self.text_id_scale <= 5.0, f"text_id_scale must lie in [0, 5]; got {self.text_id_scale}.")
        c(0.0 <= self.style_fidelity <= 1.0, f"style_fidelity must lie in [0, 1]; got {self.style_fidelity}.")
