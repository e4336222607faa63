"""Options of reference-only control (lllyasviel, sd-webui-controlnet's ``reference_only`` / ``reference_adain`` /
``reference_adain+attn`` preprocessors, 2023; diffusers' community ``stable_diffusion_reference`` pipeline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option

MODES = ("attn", "adain", "attn+adain")
MAX_WEIGHT = 2.0  # AdaIN's deepest gate is 2 (sd-webui-controlnet's gn_auto_machine_weight thresholds)


@dataclass
class ReferenceOnlyConfig(Config):
    """sd-webui-controlnet defaults: mode ``attn`` (its ``reference_only``), style fidelity 0.5; the attachment
    weight gates layers as its ``attention_auto_machine_weight`` / ``gn_auto_machine_weight`` (1.0: every
    self-attention, AdaIN at the mid block, the deeper half of the down blocks and the first half of the up blocks;
    2.0: every AdaIN point too)."""

    paper: ClassVar[str] = "lllyasviel 2023, sd-webui-controlnet reference-only (discussion #1236, #1280)"

    mode: str = option("attn", "what the reference controls: attn (self-attention), adain (feature statistics) "
                       "or attn+adain", choices=MODES)  # fmt: skip
    style_fidelity: float = option(
        0.5,
        "how much the unconditional branch keeps its own self-attention (0: prompt matters more, 1: the "
        "reference's style matters more)",
    )
    reference_pass: str = option(
        "fused", "the reference pass: fused (one row per image with its prompt, run in front of the batch in the "
        "sampling call itself), cond (the same rows as a separate pass), both (a separate pass with a row per UNet "
        "row: the community pipeline exactly)", choices=("fused", "cond", "both")
    )  # fmt: skip
    noise_seed: int = option(0, "seed of the noise added to the reference latent (step i draws from seed + i)")

    def validate(self) -> None:
        self.check(0.0 <= self.style_fidelity <= 1.0,
                   f"style_fidelity must lie in [0, 1]; got {self.style_fidelity}.")  # fmt: skip

    @property
    def attn(self) -> bool:
        return "attn" in self.mode

    @property
    def adain(self) -> bool:
        return "adain" in self.mode
