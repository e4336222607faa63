"""Options of AnyDoor (Chen et al., CVPR 2024, *AnyDoor: Zero-shot Object-level Image Customization*): the ID
extractor's image encoder, the detail branch, how the UNet decoder trains, the training pairs and timesteps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option

DECODER_MODES = ("lora", "full", "frozen")


@dataclass
class AnyDoorConfig(Config):
    """Official: DINOv2-g class + patch tokens -> Linear = the context of UNet and ControlNet; a 4-channel-hint
    ControlNet (collage + mask); ControlNet, UNet decoder and projector train (lr 1e-5); 30% uniform timesteps, else
    [500, 1000) for video pairs and [0, 500) for still images. tailor: the world CLIP vision tower stands in for
    DINOv2; the decoder trains as a LoRA delta by default (``decoder="full"`` holds full decoder weights, what an
    official checkpoint gives)."""

    paper: ClassVar[str] = "Chen et al., CVPR 2024, AnyDoor: Zero-shot Object-level Image Customization"

    image_encoder: str = option(
        "world", "frozen ID encoder (CLIPVisionModelWithProjection): 'world', 'tiny' (tests) or a local folder"
    )
    detail: bool = option(True, "detail map: the object's high-frequency map in the box (False: the box is cleared)")
    decoder: str = option(
        "lora",
        "how the UNet decoder trains: lora (low-rank delta), full (every decoder weight) or frozen",
        choices=DECODER_MODES,
    )
    rank: int = option(8, "rank of the decoder LoRA (decoder=lora)")
    lora_alpha: float = option(8.0, "alpha of the decoder LoRA (scale = alpha / rank)")
    cross_pose: float = option(
        0.7,
        "share of training pairs whose object comes from another scene (pose, scale, light); the rest use the "
        "target's own object (AnyDoor's still-image pairs)",
    )
    pose_change: float = option(45.0, "rotation change (degrees) from which a pair counts as a large pose change")
    uniform_t: float = option(0.3, "share of training timesteps drawn uniformly (official 0.3)")
    box_grow: list[float] = option([1.1, 1.2], "training boxes: the object's box grown by a ratio in this range")
    object_expand: list[float] = option([1.1, 1.4], "training objects: the crop around the mask grown by this range")
    drop_object: float = option(0.1, "share of training rows whose object is an all-zero image (trains CFG's uncond)")
    conditioning_scale: float = option(1.0, "scale of the detail branch's residuals")

    def validate(self) -> None:
        c = self.check
        c(bool(str(self.image_encoder).strip()), "image_encoder is empty; pass 'world' or an image-encoder folder.")
        c(self.decoder in DECODER_MODES, f"decoder must be one of {', '.join(DECODER_MODES)}; got {self.decoder!r}.")
        c(self.rank >= 1, f"rank must be >= 1; got {self.rank}.")
        for name in ("cross_pose", "uniform_t", "drop_object"):
            v = getattr(self, name)
            c(0.0 <= v <= 1.0, f"{name} must lie in [0, 1]; got {v}.")
        for name in ("box_grow", "object_expand"):
            v = list(getattr(self, name))
            c(len(v) == 2 and 1.0 <= v[0] <= v[1] <= 3.0, f"{name} must be [low, high] with 1 <= low <= high <= 3.")
        c(0.0 <= self.pose_change <= 180.0, f"pose_change must lie in [0, 180]; got {self.pose_change}.")
        c(self.conditioning_scale >= 0, f"conditioning_scale must not be negative; got {self.conditioning_scale}.")
