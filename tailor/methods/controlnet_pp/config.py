"""Options of ControlNet++ (Li et al. 2024, "ControlNet++: Improving Conditional Controls with Efficient Consistency
Feedback")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option


@dataclass
class ControlNetPPConfig(Config):
    """The ControlNet to fine-tune, its condition, and the reward term."""

    paper: ClassVar[str] = (
        "Li et al. 2024, ControlNet++: Improving Conditional Controls with Efficient Consistency Feedback"
    )

    init: str | None = option(
        None, "trained ControlNet to fine-tune (tailor file/folder, diffusers folder, original file); default: fresh"
    )
    condition: str = option("canny", "condition kind (one with a differentiable extractor)", choices=("canny", "hf"))
    reward_weight: float = option(0.5, "lambda of the consistency reward (paper: 0.2-1.0)")
    reward_max_t: int = option(200, "apply the reward only at timesteps t <= this (paper: 200)")
    conditioning_scale: float = option(1.0, "ControlNet residual scale (multiplied by the attachment weight)")
    guess_mode: bool = option(False, "ControlNet guess mode at sampling time")
    empty_prompts: float = option(0.0, "share of training captions replaced by ''")

    def validate(self) -> None:
        c = self.check
        c(self.reward_weight >= 0, f"reward_weight must be 0 or more; got {self.reward_weight}.")
        c(self.reward_max_t >= 0, f"reward_max_t must be 0 or more; got {self.reward_max_t}.")
        c(0 <= self.empty_prompts <= 1, f"empty_prompts must lie in [0, 1]; got {self.empty_prompts}.")
