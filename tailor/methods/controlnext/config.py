"""Options of ControlNeXt (Peng et al. 2024, "ControlNeXt: Powerful and Efficient Control for Image and Video
Generation")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.conditions import KINDS
from tailor.core.config import Config, option


@dataclass
class ControlNeXtConfig(Config):
    """Condition kind, control scale and the share of empty prompts in training."""

    paper: ClassVar[str] = (
        "Peng et al. 2024, ControlNeXt: Powerful and Efficient Control for Image and Video Generation"
    )

    condition: str = option("canny", "condition image kind", choices=tuple(KINDS))
    control_scale: float = option(1.0, "scale of the cross-normalized control (multiplied by the attachment weight)")
    empty_prompts: float = option(0.0, "share of training captions replaced by ''")

    def validate(self) -> None:
        c = self.check
        c(self.control_scale >= 0, f"control_scale must be 0 or more; got {self.control_scale}.")
        c(0 <= self.empty_prompts <= 1, f"empty_prompts must lie in [0, 1]; got {self.empty_prompts}.")
